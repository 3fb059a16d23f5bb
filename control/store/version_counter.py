"""The version counter: every endpoint write takes its next value.

On PostgreSQL that row lock makes writes commit in version order, and on SQLite
a write as the first statement takes the write lock up front, so a transaction
never has to upgrade a read lock (which SQLite can only refuse).  Workers follow
changes by version (see ``tables.VersionCounterRow``).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from control.store.tables import VersionCounterRow


def next_version(session: Session) -> int:
    """Bump the counter (locking it until the transaction ends); the new value."""
    bumped = session.execute(
        update(VersionCounterRow)
        .where(VersionCounterRow.id == 1)
        .values(value=VersionCounterRow.value + 1)
        .returning(VersionCounterRow.value)
        .execution_options(synchronize_session=False)
    )
    return int(bumped.scalar_one())


def current_version(session: Session) -> int:
    """The counter's value, as this transaction sees it."""
    return int(session.scalars(select(VersionCounterRow.value)).one())
