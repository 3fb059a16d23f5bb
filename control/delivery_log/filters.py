"""The delivery log's filters as the API and ``webhook-log`` take them, checked once.

Same names in both: endpoint, event_id, outcome, status, since, until.  A bad
value is InvalidInputError naming the field (422 in the API, exit code 2 in
the tool).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from config.errors import InvalidInputError
from control.store.attempt_listing import AttemptFilter
from worker.delivery import Outcome

OUTCOMES: tuple[str, ...] = get_args(Outcome)

__all__ = ["OUTCOMES", "Outcome", "attempt_filter", "parse_time"]


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or time as an aware datetime (UTC when it has no zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO-8601 time: {text!r} (use e.g. 2026-01-31 or 2026-01-31T10:30:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def attempt_filter(
    *,
    endpoint: str | None = None,
    event_id: str | None = None,
    outcome: str | None = None,
    status: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AttemptFilter:
    """The listing filter these values describe; InvalidInputError names a bad one."""
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInputError(
            f"outcome: must be one of {', '.join(OUTCOMES)}", fields=["outcome"]
        )
    if since is not None and until is not None and until <= since:
        raise InvalidInputError("until: must be later than since", fields=["since", "until"])
    return AttemptFilter(
        endpoint_ids=None if endpoint is None else [endpoint],
        event_id=event_id,
        outcome=outcome,
        status=status,
        since=since,
        until=until,
    )
