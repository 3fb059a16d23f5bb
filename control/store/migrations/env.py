"""Alembic's entry point for the store's schema; run through control.store.migrator."""

from __future__ import annotations

from alembic import context

from control.store import attempt_tables  # noqa: F401 - registers the delivery log's tables
from control.store.tables import Base


def run_migrations() -> None:
    """Migrate on the connection the migrator hands over (no alembic.ini, no URL here)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the store's migrations with control.store.migrator.migrate(url)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
