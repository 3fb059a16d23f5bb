"""Which logged events may be resent to one endpoint, a page at a time, and their bodies.

Isolation is in every query: an event qualifies only if it was attempted at
the endpoint *and* belongs to the endpoint's account (any account for an
explicit all-accounts endpoint).  Another account's event is simply never
selected, so callers cannot tell it from one that does not exist.

Events come oldest first (by their first matching attempt), in pages whose
keyset is (first attempt, account, event id): a page boundary never skips or
repeats an event, and no page holds more than the caller asks for.  Every
query rides ``ix_delivery_attempts_endpoint_time`` (migration 0003).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from control.store.attempt_tables import AttemptRow, EventBodyRow
from control.store.database import Database
from control.store.endpoint_reader import owned_row


@dataclass(frozen=True)
class ResendScope:
    """The endpoint events are resent to, and whose events it may receive."""

    endpoint_id: str
    account: str
    all_accounts: bool = False

    def admits(self, account: str) -> bool:
        """Whether an event of ``account`` may go to this endpoint."""
        return self.all_accounts or account == self.account


@dataclass(frozen=True)
class EventFilter:
    """Events with at least one attempt at the endpoint matching every field given."""

    event_ids: frozenset[str] = field(default_factory=frozenset)
    outcome: str | None = None
    status: int | None = None
    since: datetime | None = None  # attempt started at or after
    until: datetime | None = None  # attempt started before

    def describe(self) -> dict[str, Any]:
        """The fields given, for audit lines and reports."""
        described: dict[str, Any] = {}
        if self.event_ids:
            described["event_ids"] = sorted(self.event_ids)
        for name in ("outcome", "status"):
            if getattr(self, name) is not None:
                described[name] = getattr(self, name)
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                described[name] = moment.isoformat()
        return described


@dataclass(frozen=True, order=True)
class EventKey:
    """One logged event, in resend order; also the keyset of the next page."""

    first_at: datetime
    account: str
    event_id: str


@dataclass(frozen=True)
class StoredEvent:
    """An event's body and type as the log keeps them."""

    event_type: str
    body: bytes


def _scoped(query: Any, scope: ResendScope) -> Any:
    query = query.where(AttemptRow.endpoint_id == scope.endpoint_id)
    if not scope.all_accounts:
        query = query.where(AttemptRow.account_id == scope.account)
    return query


def _page(
    database: Database, query: Any, first_at: Any, after: EventKey | None, limit: int
) -> list[EventKey]:
    """Run a grouped query: the next ``limit`` events after ``after``, in resend order."""
    if after is not None:
        query = query.having(
            or_(
                first_at > after.first_at,
                and_(
                    first_at == after.first_at,
                    or_(
                        AttemptRow.account_id > after.account,
                        and_(
                            AttemptRow.account_id == after.account,
                            AttemptRow.event_id > after.event_id,
                        ),
                    ),
                ),
            )
        )
    query = query.order_by(first_at, AttemptRow.account_id, AttemptRow.event_id).limit(limit)
    with database.transaction() as session:
        return [
            EventKey(moment, account, event_id)
            for moment, account, event_id in session.execute(query)
        ]


def events_matching(
    database: Database,
    scope: ResendScope,
    where: EventFilter,
    *,
    after: EventKey | None = None,
    limit: int = 100,
) -> list[EventKey]:
    """The next ``limit`` events after ``after`` with an attempt at the endpoint matching."""
    first_at = func.min(AttemptRow.started_at)
    query = _scoped(select(first_at, AttemptRow.account_id, AttemptRow.event_id), scope)
    if where.event_ids:
        query = query.where(AttemptRow.event_id.in_(sorted(where.event_ids)))
    if where.outcome is not None:
        query = query.where(AttemptRow.outcome == where.outcome)
    if where.status is not None:
        query = query.where(AttemptRow.status == where.status)
    if where.since is not None:
        query = query.where(AttemptRow.started_at >= where.since)
    if where.until is not None:
        query = query.where(AttemptRow.started_at < where.until)
    query = query.group_by(AttemptRow.account_id, AttemptRow.event_id)
    return _page(database, query, first_at, after, limit)


def events_to_recover(
    database: Database,
    scope: ResendScope,
    since: datetime,
    *,
    after: EventKey | None = None,
    limit: int = 100,
) -> list[EventKey]:
    """The next ``limit`` events whose attempts at the endpoint since ``since`` failed
    (a retry or a dead letter followed) with no successful attempt there after the last
    failure."""
    failed = AttemptRow.disposition != "delivered"
    first_at = func.min(AttemptRow.started_at)
    last_failure = func.max(case((failed, AttemptRow.started_at)))
    last_success = func.max(case((~failed, AttemptRow.started_at)))
    query = (
        _scoped(select(first_at, AttemptRow.account_id, AttemptRow.event_id), scope)
        # A success before ``since`` is before every failure counted here: it never
        # clears one, so only attempts since then need reading.
        .where(AttemptRow.started_at >= since)
        .group_by(AttemptRow.account_id, AttemptRow.event_id)
        .having(last_failure.is_not(None))
        .having(or_(last_success.is_(None), last_success < last_failure))
    )
    return _page(database, query, first_at, after, limit)


def stored_events(
    database: Database, keys: Sequence[EventKey]
) -> dict[tuple[str, str], StoredEvent]:
    """The bodies the log holds for ``keys``, by (account, event id); missing ones left out."""
    if not keys:
        return {}
    wanted = {(key.account, key.event_id) for key in keys}
    # Two plain IN lists ride the primary key on both databases (SQLite does not
    # use an index for a row-value IN list: it would read every body); the few
    # pairs they match beyond those asked for are dropped here.
    query = select(
        EventBodyRow.account_id, EventBodyRow.event_id, EventBodyRow.event_type, EventBodyRow.body
    ).where(
        EventBodyRow.account_id.in_(sorted({account for account, _ in wanted})),
        EventBodyRow.event_id.in_(sorted({event_id for _, event_id in wanted})),
    )
    with database.transaction() as session:
        return {
            (account, event_id): StoredEvent(event_type, body)
            for account, event_id, event_type, body in session.execute(query)
            if (account, event_id) in wanted
        }


def endpoint_scope(database: Database, account: str, endpoint_id: str) -> ResendScope:
    """The scope of ``account``'s stored endpoint; NotFoundError for another account's."""
    with database.transaction() as session:
        row = owned_row(session, account, endpoint_id)
        return ResendScope(row.id, row.account_id, row.all_accounts)
