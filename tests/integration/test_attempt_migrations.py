"""Migration 0004 (the delivery log's listing indexes) up, down and up again, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text

from control.store.attempt_listing import AttemptFilter, list_attempts
from control.store.attempts import AttemptStore
from control.store.database import Database, DatabaseUrl
from control.store.migrator import alembic_config, current_revision, head_revision, migrate
from wire.attempt_record import AttemptRecord

NEW_INDEXES = {
    "ix_delivery_attempts_endpoint_outcome_time": ["endpoint_id", "outcome", "started_at", "id"],
    "ix_delivery_attempts_endpoint_status_time": ["endpoint_id", "status", "started_at", "id"],
    "ix_delivery_attempts_account_outcome_time": ["account_id", "outcome", "started_at", "id"],
}


def _to(database: Database, revision: str, *, down: bool = False) -> None:
    config = alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _indexes(database: Database) -> dict[str, list[str]]:
    found = inspect(database.engine).get_indexes("delivery_attempts")
    return {str(i["name"]): [str(c) for c in i["column_names"]] for i in found}


def _statistics(database: Database) -> list[str]:
    if database.url.dialect != "postgresql":
        return []
    with database.engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT stxname FROM pg_statistic_ext"))]


def _record(event_id: str, endpoint: str, outcome: str, status: int | None) -> AttemptRecord:
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    return AttemptRecord(
        event_id=event_id,
        account="acme",
        endpoint_id=endpoint,
        event_type="order.created",
        attempt=1,
        started_at=moment,
        ended_at=moment,
        duration_seconds=0.1,
        outcome=outcome,
        status=status,
        disposition="delivered" if outcome == "success" else "retry",
    )


def test_listing_indexes_migrate_up_down_and_up_keeping_the_log(database_url: str) -> None:
    database = Database(DatabaseUrl.parse(database_url))
    try:
        _to(database, "0003")
        store = AttemptStore(database)
        store.write([_record("e1", "ep1", "success", 200), _record("e2", "ep1", "timeout", None)])
        assert not NEW_INDEXES.keys() & _indexes(database).keys()

        migrate(database)
        assert current_revision(database) == head_revision() == "0004"
        indexes = _indexes(database)
        assert {name: indexes.get(name) for name in NEW_INDEXES} == NEW_INDEXES
        if database.url.dialect == "postgresql":
            assert "st_delivery_attempts_account_endpoint" in _statistics(database)
        page = list_attempts(database, AttemptFilter(endpoint_ids=["ep1"], outcome="timeout"))
        assert [a.record.event_id for a in page.attempts] == ["e2"]

        _to(database, "0003", down=True)
        assert current_revision(database) == "0003"
        assert not NEW_INDEXES.keys() & _indexes(database).keys()
        assert "st_delivery_attempts_account_endpoint" not in _statistics(database)
        page = list_attempts(database, AttemptFilter(endpoint_ids=["ep1"], status=200))
        assert [a.record.event_id for a in page.attempts] == ["e1"]

        migrate(database)
        assert current_revision(database) == "0004"
        assert NEW_INDEXES.keys() <= _indexes(database).keys()
    finally:
        database.dispose()
