"""Bringing a database's schema up to date with the migrations shipped in this package.

No alembic.ini: the Alembic configuration is built here and handed the
connection, so ``migrate(url)`` is all a deployment (or a test) calls.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import exc, text

from config.errors import StoreError
from control.store.database import Database, DatabaseUrl

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any fixed number: PostgreSQL's advisory lock that makes concurrent migrators
# (several API replicas starting together) take turns instead of racing.
_MIGRATION_LOCK = 0x77686D67


def alembic_config() -> Config:
    """The Alembic configuration of the store (for ``command.revision`` in development)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest migration shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store ships at least one migration"
    return head


def migrate(target: str | DatabaseUrl | Database) -> None:
    """Upgrade the schema to the newest migration; a no-op when it is already there."""
    database, owned = _database(target)
    config = alembic_config()
    try:
        with database.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except exc.SQLAlchemyError as error:
        raise database.wrap(error) from None
    except CommandError as error:
        raise StoreError(f"database {database.url.redacted}: migration failed: {error}") from None
    finally:
        if owned:
            database.dispose()


def current_revision(target: str | DatabaseUrl | Database) -> str | None:
    """The migration the database is at, or None when it has none yet."""
    database, owned = _database(target)
    try:
        with database.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except exc.SQLAlchemyError as error:
        raise database.wrap(error) from None
    finally:
        if owned:
            database.dispose()


def _database(target: str | DatabaseUrl | Database) -> tuple[Database, bool]:
    if isinstance(target, Database):
        return target, False
    url = target if isinstance(target, DatabaseUrl) else DatabaseUrl.parse(target)
    return Database(url), True
