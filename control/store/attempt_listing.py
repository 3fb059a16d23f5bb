"""Pages of the delivery log: attempts by account, endpoint, event, outcome, status and time.

Newest first, ordered by (started_at, id) so that a page boundary never
splits or repeats a row: the cursor is the last row's (started_at, id), opaque
to callers.  Each filter rides an index of migrations 0003 and 0004: an
endpoint's attempts by time (or by outcome or status, then time), an
account's by time (or by outcome, then time), an event's, or an outcome's by
time; ``python -m bench.attempt_listing`` measures them among 10 million rows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select, tuple_

from config.errors import InvalidInputError
from control.store.attempt_scope import AccountScope
from control.store.attempt_tables import AttemptRow
from control.store.attempts import LoggedAttempt, logged
from control.store.database import Database

MAX_PAGE = 1000


@dataclass(frozen=True)
class AttemptFilter:
    """What to list; every field given narrows the list (all of them together)."""

    account: str | None = None
    endpoint_ids: Sequence[str] | None = None  # e.g. an account's own endpoints
    event_id: str | None = None
    outcome: str | None = None
    status: int | None = None
    since: datetime | None = None  # started at or after
    until: datetime | None = None  # started before
    scope: AccountScope | None = None  # only what this account may see (its endpoints)


@dataclass(frozen=True)
class AttemptPage:
    """One page, and the cursor of the next (None on the last page)."""

    attempts: list[LoggedAttempt]
    next_cursor: str | None


def encode_cursor(last: LoggedAttempt) -> str:
    """The cursor of the page after ``last``."""
    return cursor_before(last.record.started_at, last.id)


def cursor_before(started_at: datetime, row_id: int) -> str:
    """The cursor of a page of the attempts before ``(started_at, row_id)``."""
    text = f"{started_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (started_at, id) a cursor holds; InvalidInputError (field ``cursor``) otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        moment, _, row_id = raw.partition("|")
        started_at, number = datetime.fromisoformat(moment), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        started_at, number = None, 0
    if started_at is None or started_at.tzinfo is None or number <= 0:
        raise InvalidInputError(
            "cursor: not a cursor given out here; use next_cursor from the previous page",
            fields=["cursor"],
        )
    return started_at, number


def list_attempts(
    database: Database, where: AttemptFilter, *, limit: int = 100, cursor: str | None = None
) -> AttemptPage:
    """One page of attempts matching ``where``, newest first."""
    query = page_query(where, limit=limit, cursor=cursor)
    with database.transaction() as session:
        rows = [logged(row) for row in session.scalars(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return AttemptPage(rows, encode_cursor(rows[-1]) if more and rows else None)


def page_query(
    where: AttemptFilter, *, limit: int = 100, cursor: str | None = None
) -> Select[AttemptRow]:
    """The statement behind :func:`list_attempts` (one row more than ``limit``)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit: must be 1-{MAX_PAGE}", fields=["limit"])
    query = select(AttemptRow)
    if where.scope is not None:
        query = query.where(where.scope.condition())
    if where.account is not None:
        query = query.where(AttemptRow.account_id == where.account)
    if where.endpoint_ids is not None:
        query = query.where(AttemptRow.endpoint_id.in_(list(where.endpoint_ids)))
    if where.event_id is not None:
        query = query.where(AttemptRow.event_id == where.event_id)
    if where.outcome is not None:
        query = query.where(AttemptRow.outcome == where.outcome)
    if where.status is not None:
        query = query.where(AttemptRow.status == where.status)
    if where.since is not None:
        query = query.where(AttemptRow.started_at >= where.since)
    if where.until is not None:
        query = query.where(AttemptRow.started_at < where.until)
    if cursor is not None:
        started_at, row_id = decode_cursor(cursor)
        # A row value, not "started_at < t OR (started_at = t AND id < n)": both
        # PostgreSQL and SQLite make it a range of the (…, started_at, id) index,
        # where the OR made PostgreSQL filter every newer row of the endpoint
        # (a deep page of a busy endpoint took seconds among 10 million rows).
        query = query.where(tuple_(AttemptRow.started_at, AttemptRow.id) < (started_at, row_id))
    query = query.order_by(AttemptRow.started_at.desc(), AttemptRow.id.desc()).limit(limit + 1)
    return query
