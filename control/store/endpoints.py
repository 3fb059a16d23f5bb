"""The endpoint repository: each account's endpoints, and everything for the workers.

Reads live in ``endpoint_reader``, writes in ``endpoint_writer``; this module
opens the database and the key and joins the two.  Every method is one
transaction; an account sees only its own endpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from config.settings import Settings
from control.store.cipher import SecretCipher
from control.store.clock import Clock, utc_now
from control.store.database import Database, DatabaseUrl
from control.store.endpoint_reader import EndpointReader
from control.store.endpoint_writer import EndpointWriter
from control.store.key import load_secrets_key
from control.store.notification_targets import NotificationTargets

if TYPE_CHECKING:
    from control.store.attempt_reader import AttemptReader


class EndpointStore(EndpointReader, EndpointWriter):
    """Accounts' webhook endpoints in SQLite or PostgreSQL, secrets encrypted."""

    def __init__(self, database: Database, cipher: SecretCipher, *, clock: Clock = utc_now):
        self._db = database
        self._cipher = cipher
        self._clock = clock

    @classmethod
    def open(
        cls,
        database_url: str | None = None,
        *,
        secrets_key: SecretStr | None = None,
        secrets_key_file: Path | None = None,
        migrate: bool = False,
        clock: Clock = utc_now,
    ) -> EndpointStore:
        """Connect (lazily) and load the key; ``migrate`` also brings the schema up to date."""
        url = DatabaseUrl.parse(database_url)
        cipher = SecretCipher(load_secrets_key(url, secrets_key, secrets_key_file))
        database = Database(url)
        if migrate:
            # Imported here: Alembic (and its every SQL dialect, Mako, Pygments'
            # plugins) costs a worker ~10 MB it never needs; the API migrates.
            from control.store.migrator import migrate as migrate_schema

            migrate_schema(database)
        return cls(database, cipher, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = False) -> EndpointStore:
        """The store that DATABASE_URL (or WEBHOOK_DATA_DIR), SECRETS_KEY and
        SECRETS_KEY_FILE describe."""
        return cls.open(
            settings.store_database_url(),
            secrets_key=settings.secrets_key,
            secrets_key_file=settings.secrets_key_file,
            migrate=migrate,
        )

    def __repr__(self) -> str:
        return f"EndpointStore({self._db.url.redacted!r})"

    def close(self) -> None:
        """Close the database connections."""
        self._db.dispose()

    def notification_targets(self) -> NotificationTargets:
        """The accounts' notification URLs: same database, same key."""
        return NotificationTargets(self._db, self._cipher, clock=self._clock)

    def delivery_log(self) -> AttemptReader:
        """The delivery log's read side: same database, same clock."""
        # Imported here: the log's modules pull in Alembic, which workers never need.
        from control.store.attempt_reader import AttemptReader

        return AttemptReader(self._db, clock=self._clock)
