"""The database behind the endpoint store: its URL, its engine, and its transactions.

``DATABASE_URL`` is ``sqlite:///PATH`` (the default, no set-up) or
``postgresql://...`` (driven by psycopg 3).  Every SQLAlchemy error is turned
into the project's error tree here, at the one place sessions are opened, and
no message ever carries the database password.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from broker.url import redact_url
from config.errors import ConfigError, ConflictError, StoreError, StoreUnavailableError

DEFAULT_DATABASE_URL = "sqlite:///webhooks.db"
POSTGRES_DRIVER = "postgresql+psycopg"
# Long enough to ride out another process's write; short enough that a wedged
# database turns into a 503 rather than a hung request.
SQLITE_BUSY_SECONDS = 10
POSTGRES_CONNECT_SECONDS = 5
# As many pooled connections as threads may query at once: the API's store calls
# run in asyncio's default executor, which has this many threads. With fewer,
# every call beyond the pool opened and closed a connection of its own (on
# PostgreSQL a new server process and a SCRAM handshake, several milliseconds).
POOL_SIZE = min(32, (os.cpu_count() or 1) + 4)

Dialect = Literal["sqlite", "postgresql"]
# Connection-level trouble (refused, lost, locked, pool exhausted), as opposed to
# a bad statement or a constraint.
_UNREACHABLE = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)


@dataclass(frozen=True)
class DatabaseUrl:
    """A validated ``DATABASE_URL``; ``str`` and ``repr`` mask its password."""

    _raw: str = field(repr=False)
    _url: URL = field(repr=False)

    @classmethod
    def parse(cls, raw: str | None) -> DatabaseUrl:
        """Check ``raw`` (None or blank: the SQLite default) and pick the driver."""
        raw = (raw or "").strip() or DEFAULT_DATABASE_URL
        try:
            url = make_url(raw)
        except (exc.ArgumentError, ValueError):
            raise ConfigError(f"DATABASE_URL: not a database URL: {redact_url(raw)!r}") from None
        if url.drivername in ("sqlite", "sqlite+pysqlite"):
            if url.database in (None, "", ":memory:"):
                raise ConfigError(
                    "DATABASE_URL: an in-memory SQLite database would vanish with each "
                    "connection; give a file (sqlite:///PATH)"
                )
            return cls(raw, url.set(drivername="sqlite"))
        if url.drivername in ("postgresql", "postgres", POSTGRES_DRIVER):
            return cls(raw, url.set(drivername=POSTGRES_DRIVER))
        raise ConfigError(
            "DATABASE_URL: use sqlite:///PATH or postgresql://user:password@host/db, "
            f"got {redact_url(raw)!r}"
        )

    @property
    def dialect(self) -> Dialect:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self._url.drivername == "sqlite" else "postgresql"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL."""
        if self.dialect != "sqlite" or self._url.database is None:
            return None
        return Path(self._url.database)

    @property
    def redacted(self) -> str:
        """The URL with its password masked, for logs and errors."""
        return redact_url(self._raw)

    @property
    def password(self) -> str | None:
        """The password, only to scrub it from driver messages."""
        return self._url.password

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted!r})"

    def create_engine(self) -> Engine:
        """A SQLAlchemy engine for this URL, with the per-dialect connection set-up.

        JSON columns are read with orjson: every endpoint row has two, and the
        standard library takes ~10 times as long for each.
        """
        if self.dialect == "sqlite":
            path = self.sqlite_path
            if path is not None:
                # Zero set-up: SQLite creates the file but not its directory.
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self._url,
                connect_args={"timeout": SQLITE_BUSY_SECONDS},
                json_deserializer=orjson.loads,
                pool_size=POOL_SIZE,
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            return engine
        return create_engine(
            self._url,
            pool_pre_ping=True,
            pool_size=POOL_SIZE,
            connect_args={"connect_timeout": POSTGRES_CONNECT_SECONDS},
            json_deserializer=orjson.loads,
        )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: the API's writes never block the workers' reads. Foreign keys are
        # off by default in SQLite, per connection.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _missing_table(error: exc.SQLAlchemyError) -> bool:
    original = getattr(error, "orig", None)
    # PostgreSQL's undefined_table; SQLite only says so in words.
    return getattr(original, "sqlstate", None) == "42P01" or "no such table" in str(original)


class Database:
    """An engine plus the one way to use it: a transaction that speaks our errors."""

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self.engine = url.create_engine()
        # PostgreSQL: the same pool, each connection back in its usual isolation
        # level when returned. pysqlite never opens a transaction for a SELECT, and
        # switching its level costs a PRAGMA each way.
        self._reader = (
            self.engine
            if url.dialect == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    def __repr__(self) -> str:
        return f"Database({self.url.redacted!r})"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except exc.SQLAlchemyError as error:
            raise self.wrap(error) from None

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads only, each statement its own transaction.

        No BEGIN and no COMMIT or ROLLBACK: on PostgreSQL that is two round
        trips fewer per API read than a session's transaction.
        """
        try:
            with self._reader.connect() as connection:
                yield connection
        except exc.SQLAlchemyError as error:
            raise self.wrap(error) from None

    def wrap(self, error: exc.SQLAlchemyError) -> StoreError:
        """The project error for a SQLAlchemy error, its message free of secrets."""
        reason = self._reason(error)
        if _missing_table(error):
            return StoreError(
                f"database {self.url.redacted} has no store schema (or an old one): run the "
                f"migrations (control.store.migrator.migrate): {reason}"
            )
        if isinstance(error, exc.IntegrityError):
            return ConflictError(f"the write conflicts with stored data: {reason}")
        if isinstance(error, _UNREACHABLE):
            return StoreUnavailableError(f"database {self.url.redacted} is unavailable: {reason}")
        return StoreError(f"database {self.url.redacted}: {reason}")

    def _reason(self, error: exc.SQLAlchemyError) -> str:
        # The driver's first line only: SQLAlchemy appends the statement and its
        # parameters (ciphertexts, URLs) after it.
        original = getattr(error, "orig", None) or error
        lines = str(original).strip().splitlines()
        reason = lines[0] if lines else type(original).__name__
        password = self.url.password
        if password:
            reason = reason.replace(password, "***")
        return reason

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
