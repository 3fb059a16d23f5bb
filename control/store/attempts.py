"""The delivery log's repository: attempt records written in batches, read, and aged out.

Writes are idempotent: a record already stored (the same event, endpoint,
attempt number and start time) is skipped, so a batch written twice (its
recorder died before acking it) counts once.  Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, delete, exists, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from config.settings import Settings
from control.store.attempt_tables import AttemptRow, EventBodyRow
from control.store.clock import Clock, utc_now
from control.store.database import Database, DatabaseUrl
from control.store.migrator import migrate as migrate_schema
from wire.attempt_record import AttemptRecord, Disposition

_IDENTITY = ("event_id", "endpoint_id", "attempt", "started_at")


@dataclass(frozen=True)
class LoggedAttempt:
    """A stored attempt: the record as written, its row id and when it was recorded."""

    id: int
    record: AttemptRecord
    recorded_at: datetime


@dataclass(frozen=True)
class Kept:
    """What the log holds: attempts, event bodies, and the oldest attempt's start."""

    attempts: int
    bodies: int
    oldest_started_at: datetime | None


class AttemptStore:
    """The delivery log in SQLite or PostgreSQL (the endpoint store's database)."""

    def __init__(self, database: Database, *, clock: Clock = utc_now) -> None:
        self._db = database
        self._clock = clock

    @classmethod
    def open(
        cls, database_url: str | None = None, *, migrate: bool = False, clock: Clock = utc_now
    ) -> AttemptStore:
        """Connect (lazily); ``migrate`` also brings the schema up to date."""
        database = Database(DatabaseUrl.parse(database_url))
        if migrate:
            migrate_schema(database)
        return cls(database, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = False) -> AttemptStore:
        """The log in the store that DATABASE_URL (or WEBHOOK_DATA_DIR) names."""
        return cls.open(settings.store_database_url(), migrate=migrate)

    def __repr__(self) -> str:
        return f"AttemptStore({self._db.url.redacted!r})"

    @property
    def database(self) -> Database:
        """The database (for the recorder's error handling)."""
        return self._db

    def close(self) -> None:
        """Close the database connections."""
        self._db.dispose()

    def write(self, records: Sequence[AttemptRecord]) -> int:
        """Store ``records`` and the bodies they carry; returns how many were new."""
        if not records:
            return 0
        now = self._clock()
        bodies: dict[tuple[str, str], dict[str, Any]] = {}
        rows = []
        for record in records:
            rows.append(_row(record, now))
            if record.body is not None:
                bodies.setdefault(
                    (record.account, record.event_id),
                    {
                        "account_id": record.account,
                        "event_id": record.event_id,
                        "event_type": record.event_type,
                        "body": record.body,
                        "first_attempt_at": record.started_at,
                    },
                )
        with self._db.transaction() as session:
            if bodies:
                session.execute(
                    self._insert(EventBodyRow.__table__).on_conflict_do_nothing(
                        index_elements=["account_id", "event_id"]
                    ),
                    list(bodies.values()),
                )
            inserted = session.execute(
                self._insert(AttemptRow.__table__)
                .on_conflict_do_nothing(index_elements=list(_IDENTITY))
                .returning(AttemptRow.id),
                rows,
            ).all()
        return len(inserted)

    def _insert(self, table: Any) -> Any:
        module = postgresql if self._db.url.dialect == "postgresql" else sqlite
        statement: Insert = module.insert(table)
        return statement

    def attempts_of_event(
        self, event_id: str, *, endpoint_id: str | None = None
    ) -> list[LoggedAttempt]:
        """Every attempt of one event (to one endpoint, if given), oldest first."""
        query = select(AttemptRow).where(AttemptRow.event_id == event_id)
        if endpoint_id is not None:
            query = query.where(AttemptRow.endpoint_id == endpoint_id)
        query = query.order_by(AttemptRow.started_at, AttemptRow.id)
        with self._db.transaction() as session:
            return [logged(row) for row in session.scalars(query)]

    def event_body(self, account: str, event_id: str) -> bytes | None:
        """The event's body as first delivered, or None if the log does not hold it."""
        with self._db.transaction() as session:
            row = session.get(EventBodyRow, (account, event_id))
            return None if row is None else row.body

    def delete_attempts_before(self, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` attempts that started before ``cutoff``, oldest first."""
        oldest = (
            select(AttemptRow.id)
            .where(AttemptRow.started_at < cutoff)
            .order_by(AttemptRow.started_at)
            .limit(limit)
        )
        with self._db.transaction() as session:
            result = session.execute(delete(AttemptRow).where(AttemptRow.id.in_(oldest)))
            return int(getattr(result, "rowcount", 0))

    def delete_bodies_before(self, cutoff: datetime, limit: int) -> int:
        """Delete at most ``limit`` bodies first sent before ``cutoff`` whose every attempt is
        gone (a body stays while a later attempt of its event is kept)."""
        table: Table = EventBodyRow.__table__  # type: ignore[assignment]
        attempts: Table = AttemptRow.__table__  # type: ignore[assignment]
        unused = (
            select(table.c.account_id, table.c.event_id)
            .where(table.c.first_attempt_at < cutoff)
            .where(
                ~exists().where(
                    attempts.c.event_id == table.c.event_id,
                    attempts.c.account_id == table.c.account_id,
                )
            )
            .limit(limit)
        )
        with self._db.transaction() as session:
            result = session.execute(
                delete(table).where(tuple_(table.c.account_id, table.c.event_id).in_(unused))
            )
            return int(getattr(result, "rowcount", 0))

    def kept(self) -> Kept:
        """How much the log holds now."""
        with self._db.transaction() as session:
            attempts, oldest = session.execute(
                select(func.count(AttemptRow.id), func.min(AttemptRow.started_at))
            ).one()
            bodies = session.scalar(select(func.count()).select_from(EventBodyRow)) or 0
        return Kept(int(attempts), int(bodies), oldest)


def _row(record: AttemptRecord, now: datetime) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "account_id": record.account,
        "endpoint_id": record.endpoint_id,
        "event_type": record.event_type,
        "attempt": record.attempt,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "duration_seconds": record.duration_seconds,
        "outcome": record.outcome,
        "status": record.status,
        "error": record.error,
        "response_headers": record.response_headers,
        "response_excerpt": record.response_excerpt,
        "disposition": record.disposition,
        "next_attempt": record.next_attempt,
        "dead_letter_reason": record.dead_letter_reason,
        "recorded_at": now,
    }


def logged(row: AttemptRow) -> LoggedAttempt:
    record = AttemptRecord.model_construct(
        event_id=row.event_id,
        account=row.account_id,
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        attempt=row.attempt,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration_seconds=row.duration_seconds,
        outcome=row.outcome,
        status=row.status,
        error=row.error,
        response_headers=dict(row.response_headers),
        response_excerpt=row.response_excerpt,
        disposition=cast(Disposition, row.disposition),
        next_attempt=row.next_attempt,
        dead_letter_reason=row.dead_letter_reason,
        body=None,
    )
    return LoggedAttempt(row.id, record, row.recorded_at)
