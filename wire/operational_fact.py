"""An operational fact: what a worker saw happen to an endpoint, on its way to the notifier.

Workers publish one small JSON message per fact to the operational-facts queue
(config.topology); the notifier (control.notifications) aggregates them into
signed notices.  Only bounded, non-sensitive values travel: ids, a fact kind,
a reason *kind* (``exhausted``, ``gone``...), never a response body, an error
text or another account's name (a ``wrong_account`` reason names the other
account, so only its kind is kept).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

FactKind = Literal["paused", "circuit_opened", "circuit_closed", "dead_lettered"]
FACT_KINDS: tuple[FactKind, ...] = get_args(FactKind)
# The bounded reason kinds a notice may carry; anything else becomes "other".
REASON_KINDS = (
    "exhausted",
    "gone",
    "poison",
    "retry_after_too_long",
    "wrong_account",
    "410 Gone",
)
_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_MAX_FACT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class OperationalFact:
    """One fact about one endpoint (``endpoint`` is the subscriber id) of ``account``.

    ``account`` is None for an internal all-accounts endpoint of the subscriber
    file, which belongs to no merchant (its notices go to the operator only).
    """

    kind: FactKind
    account: str | None
    endpoint: str
    at: float  # Unix seconds, when the worker saw it
    event_id: str | None = None
    reason: str | None = None


def reason_kind(reason: str | None) -> str | None:
    """The bounded kind of a dead-letter reason (``poison: ...`` -> ``poison``)."""
    if reason is None:
        return None
    kind = reason.split(":", 1)[0].strip()
    return kind if kind in REASON_KINDS else "other"


def encode_fact(fact: OperationalFact) -> bytes:
    """The message body of ``fact``."""
    return json.dumps(
        {
            "kind": fact.kind,
            "account": fact.account,
            "endpoint": fact.endpoint,
            "at": fact.at,
            "event_id": fact.event_id,
            "reason": fact.reason,
        },
        separators=(",", ":"),
    ).encode()


def decode_fact(body: bytes) -> OperationalFact | None:
    """The fact in a message body, or None if it is not one (the caller logs it)."""
    if len(body) > _MAX_FACT_BYTES:
        return None
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    kind, account, endpoint, at = (raw.get(k) for k in ("kind", "account", "endpoint", "at"))
    event_id, reason = raw.get("event_id"), raw.get("reason")
    if kind not in FACT_KINDS or not isinstance(at, int | float) or isinstance(at, bool):
        return None
    if not (isinstance(endpoint, str) and _ID.match(endpoint)):
        return None
    if account is not None and not (isinstance(account, str) and _ID.match(account)):
        return None
    if event_id is not None and not (isinstance(event_id, str) and _ID.match(event_id)):
        return None
    if reason is not None and reason not in REASON_KINDS and reason != "other":
        return None
    return OperationalFact(cast(FactKind, kind), account, endpoint, float(at), event_id, reason)
