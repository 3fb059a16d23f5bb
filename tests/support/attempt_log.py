"""Delivery-log data for tests: attempt records written straight through the store's writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from control.store.attempts import AttemptStore
from wire.attempt_record import AttemptRecord


def attempt(
    event_id: str,
    endpoint_id: str,
    started_at: datetime,
    *,
    account: str = "acct_a",
    attempt: int = 1,
    outcome: str = "success",
    status: int | None = 200,
    milliseconds: float = 20.0,
    **extra: Any,
) -> AttemptRecord:
    """One record; a success by default, carrying the body on attempt 1."""
    fields: dict[str, Any] = {
        "event_id": event_id,
        "account": account,
        "endpoint_id": endpoint_id,
        "event_type": "order.created",
        "attempt": attempt,
        "started_at": started_at,
        "ended_at": started_at + timedelta(milliseconds=milliseconds),
        "duration_seconds": milliseconds / 1000,
        "outcome": outcome,
        "status": status,
        "disposition": "delivered" if outcome == "success" else "retry",
        "next_attempt": None if outcome == "success" else attempt + 1,
        "response_excerpt": b'{"received":true}' if outcome == "success" else b"try later",
        "response_headers": {"content-type": "application/json"},
        "body": (
            b'{"type":"order.created","id":"%s","account":"%s"}'
            % (event_id.encode(), account.encode())
            if attempt == 1
            else None
        ),
    }
    fields.update(extra)
    return AttemptRecord.model_validate(fields)


def write(database_url: str, records: list[AttemptRecord]) -> int:
    """Store ``records`` as the recorder does; how many were new."""
    store = AttemptStore.open(database_url, migrate=True)
    try:
        return store.write(records)
    finally:
        store.close()


def minutes_ago(minutes: float, now: datetime | None = None) -> datetime:
    """``minutes`` before ``now`` (default: the real now, UTC)."""
    return (now or datetime.now(UTC)) - timedelta(minutes=minutes)
