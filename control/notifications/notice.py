"""A notice: the signed JSON body and headers one window of facts becomes.

The body has the webhook envelope's shape, ``{"event", "data", "timestamp"}``,
encoded by ``wire.json_body.encode_body`` so that the product page's verifier
(which signs ``JSON.stringify(req.body)``) accepts it, and signed with
``wire.signature.sign``: receivers verify notices exactly as they verify
webhooks.  ``event`` names the most important thing the window saw (a pause,
then the circuit's latest state if it opened, then dead letters, then a
closed circuit); ``data.counts`` has every kind.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from control.notifications.aggregator import Window
from wire import contract
from wire.envelope import format_timestamp
from wire.json_body import encode_body
from wire.signature import sign

NOTICE_EVENTS = (
    "endpoint.paused",
    "endpoint.circuit_opened",
    "endpoint.dead_lettered",
    "endpoint.circuit_closed",
)


def notice_event(window: Window[Any]) -> str:
    """The ``event`` of the notice for ``window`` (one of NOTICE_EVENTS)."""
    if window.counts["paused"]:
        return "endpoint.paused"
    circuit = window.last_circuit
    if circuit is not None and circuit.kind == "circuit_opened":
        return "endpoint.circuit_opened"
    if window.counts["dead_lettered"]:
        return "endpoint.dead_lettered"
    return "endpoint.circuit_closed"


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def notice_data(window: Window[Any], window_seconds: float) -> dict[str, Any]:
    """The ``data`` of the notice: counts, and the first and last event ids involved."""
    data: dict[str, Any] = {
        "account": window.account,
        "endpoint": window.endpoint,
        "counts": {
            "paused": window.counts["paused"],
            "circuit_opened": window.counts["circuit_opened"],
            "circuit_closed": window.counts["circuit_closed"],
            "dead_lettered": window.counts["dead_lettered"],
        },
        "first_at": _iso(window.first_at),
        "last_at": _iso(window.last_at),
        "window_seconds": window_seconds,
        "paused": None,
        "circuit": None,
        "dead_lettered": None,
    }
    if window.pause is not None:
        data["paused"] = {
            "event_id": window.pause.event_id,
            "reason": window.pause.reason,
            "at": _iso(window.pause.at),
            "resume_with": f"webhook-worker resume {window.endpoint}",
        }
    if window.last_circuit is not None:
        state = "open" if window.last_circuit.kind == "circuit_opened" else "closed"
        data["circuit"] = {"state": state, "at": _iso(window.last_circuit.at)}
    first, last = window.first_dead_letter, window.last_dead_letter
    if first is not None and last is not None:
        data["dead_lettered"] = {
            "count": window.counts["dead_lettered"],
            "first_event_id": first.event_id,
            "last_event_id": last.event_id,
            "reasons": dict(sorted(window.reasons.items())),
            "inspect_with": f"webhook-dlq show {window.endpoint}",
        }
    return data


def notice_id() -> str:
    """A fresh notice id, sent as X-Webhook-Id (the same on every retry and destination)."""
    return f"ntc_{uuid.uuid4().hex}"


def notice_body(
    window: Window[Any], window_seconds: float, *, now: datetime | None = None
) -> bytes:
    """The exact body of the notice for ``window``."""
    moment = datetime.now(UTC) if now is None else now
    return encode_body(
        {
            "event": notice_event(window),
            "data": notice_data(window, window_seconds),
            "timestamp": format_timestamp(moment),
        }
    )


def notice_headers(
    body: bytes, event: str, notice: str, secret: str, *, now_ms: int
) -> dict[str, str]:
    """The HTTP headers of one POST of a notice, signature included."""
    return {
        "Content-Type": contract.CONTENT_TYPE,
        "User-Agent": contract.USER_AGENT,
        contract.HTTP_SIGNATURE: sign(secret, body, now_ms),
        contract.HTTP_EVENT: event,
        contract.HTTP_ID: notice,
    }
