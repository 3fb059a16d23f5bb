"""Turning a queued AMQP message into the event it carries (see :mod:`wire.contract`).

The worker delivers what :func:`read_event` returns; the dead-letter tools use it
to show the event id receivers saw.  Anything that is not a deliverable event
raises :class:`PoisonMessageError` with a short reason; the worker moves such a
message to the dead-letter queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from config.errors import PayloadError, PoisonMessageError
from wire import contract
from wire.canonical_fast_path import decode_if_canonical
from wire.envelope import ACCOUNT_ID, fallback_event_id
from wire.json_body import decode_body, encode_body

if TYPE_CHECKING:
    from broker.properties import MessageProperties

# Far above any order event; express.json() receivers refuse >100 kB by default.
MAX_BODY_BYTES = 1024 * 1024
# The event type and id travel as HTTP header values: no control characters (a
# CR/LF would make the HTTP client refuse the request, every time), and AMQP's
# 255-byte short-string limit.
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_HEADER_BYTES = 255


def _header_problem(value: str) -> str | None:
    if _HEADER_UNSAFE.search(value):
        return "contains control characters"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "contains a lone surrogate (not encodable as UTF-8)"
    if size > _MAX_HEADER_BYTES:
        return f"is longer than {_MAX_HEADER_BYTES} bytes"
    return None


@dataclass(frozen=True)
class QueuedEvent:
    """An event ready to be POSTed: the exact body and what goes in the headers."""

    event_id: str
    event_type: str
    attempt: int
    body: bytes
    occurred_at: datetime | None
    first_attempt_at: str | None
    # The merchant the event belongs to (header x-webhook-account), None when the
    # message has no valid one: the worker then refuses to deliver it anywhere.
    account: str | None = None


def header(properties: MessageProperties, name: str) -> Any:
    """A message header as text where it was sent as UTF-8 bytes, or None."""
    value = properties.header(name)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


def read_event(properties: MessageProperties, body: bytes, *, max_attempts: int) -> QueuedEvent:
    """Validate a queued message and return the event to deliver.

    The body is re-encoded in the exact form the product page's verifier
    recomputes, so a producer in another language that pretty-printed its JSON
    still produces deliveries that verify.
    """
    if len(body) > MAX_BODY_BYTES:
        raise PoisonMessageError(f"body is {len(body)} bytes, over the {MAX_BODY_BYTES} cap")
    # Fast path: a body our own producer wrote is already canonical, and
    # decode_if_canonical proves that in a few µs.  Otherwise decode here and
    # re-encode after the checks below, so a body that is both malformed and
    # not re-encodable still gets the same reason as before.
    envelope: object = decode_if_canonical(body)
    already_canonical = envelope is not None
    if not already_canonical:
        try:
            envelope = decode_body(body)
        except PayloadError as exc:
            raise PoisonMessageError(f"body is not valid JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise PoisonMessageError("body is not a JSON object")
    event_type = envelope.get("event")
    if not isinstance(event_type, str) or not event_type:
        raise PoisonMessageError("body has no 'event' string")
    problem = _header_problem(event_type)
    if problem:
        raise PoisonMessageError(f"'event' {problem}")
    if not isinstance(envelope.get("data"), dict):
        raise PoisonMessageError("body has no 'data' object")
    timestamp = envelope.get("timestamp")
    if not isinstance(timestamp, str):
        raise PoisonMessageError("body has no 'timestamp' string")
    try:
        occurred_at: datetime | None = datetime.fromisoformat(timestamp)
    except ValueError:
        occurred_at = None  # still deliverable; only the latency metric needs it

    attempt = header(properties, contract.ATTEMPT)
    if attempt is None:
        attempt = 1
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise PoisonMessageError(f"header {contract.ATTEMPT} is not an integer")
    if not 1 <= attempt <= max_attempts:
        raise PoisonMessageError(f"header {contract.ATTEMPT}={attempt} is outside 1-{max_attempts}")

    if already_canonical:
        canonical = body
    else:
        try:
            canonical = encode_body(envelope)
        except PayloadError as exc:
            raise PoisonMessageError(f"body cannot be re-encoded: {exc}") from None
    event_id = properties.message_id
    if isinstance(event_id, str) and event_id:
        problem = _header_problem(event_id)
        if problem:
            raise PoisonMessageError(f"message_id {problem}")
    else:
        event_id = fallback_event_id(canonical)
    first = header(properties, contract.FIRST_ATTEMPT_AT)
    account = header(properties, contract.ACCOUNT)
    return QueuedEvent(
        event_id=event_id,
        event_type=event_type,
        attempt=attempt,
        body=canonical,
        occurred_at=occurred_at,
        first_attempt_at=first if isinstance(first, str) else None,
        account=account if isinstance(account, str) and ACCOUNT_ID.match(account) else None,
    )
