"""The endpoint repository: each account's endpoints, and everything for the workers.

Every method is one transaction.  Every write first takes the next value of the
version counter (see ``tables.VersionCounterRow``): on PostgreSQL that row lock
makes writes commit in version order, and on SQLite a write as the first
statement takes the write lock up front, so a transaction never has to upgrade
a read lock (which SQLite can only refuse).  An account sees only its own
endpoints: another account's id is "not found", exactly like an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from config.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from config.settings import Settings
from config.subscribers import SUBSCRIBER_ID
from control.store import views
from control.store.cipher import SecretCipher
from control.store.database import Database, DatabaseUrl
from control.store.key import load_secrets_key
from control.store.models import (
    MAX_OVERLAP_SECONDS,
    OPTION_FIELDS,
    PAUSED_REASON_MAX,
    Changes,
    Endpoint,
    EndpointInput,
    EndpointPatch,
    EndpointWithSecrets,
    Snapshot,
)
from control.store.notification_targets import NotificationTargets
from control.store.records import column_value, endpoint_of, with_secrets
from control.store.tables import AccountRow, EndpointDeletionRow, EndpointRow, VersionCounterRow
from control.store.tokens import new_endpoint_id, new_signing_secret
from control.store.views import ShownEndpoint
from wire.envelope import ACCOUNT_ID

Clock = Callable[[], datetime]
# Rows fetched per round trip by load_each.
_LOAD_BATCH = 500
_ACCOUNT = select(AccountRow.id).where(AccountRow.id == bindparam("account"))


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class EndpointStore:
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

    # ------------------------------------------------------------- accounts' API

    def create_endpoint(
        self,
        account: str,
        data: EndpointInput,
        *,
        endpoint_id: str | None = None,
        secret: SecretStr | None = None,
    ) -> tuple[Endpoint, SecretStr]:
        """Store a new endpoint (and its account, if new); its secret is shown only now.

        ``endpoint_id`` and ``secret`` default to fresh random ones; declarative
        imports (``webhook-admin apply``) give their own. A taken id is a ConflictError.
        """
        if not ACCOUNT_ID.match(account):
            raise InvalidInputError(
                "account: must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                fields=["account"],
            )
        if endpoint_id is not None and not SUBSCRIBER_ID.match(endpoint_id):
            raise InvalidInputError(
                "id: must be 1-64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                fields=["id"],
            )
        now = self._clock()
        endpoint_id = endpoint_id or new_endpoint_id()
        plain = _given_secret(secret) if secret is not None else new_signing_secret()
        with self._db.transaction() as session:
            version = _next_version(session)
            if session.get(EndpointRow, endpoint_id) is not None:
                raise ConflictError(f"endpoint id {endpoint_id!r} is taken")
            # A given id may be one deleted earlier: its tombstone would tell workers
            # it is gone, and would block the tombstone of its next deletion.
            session.execute(
                delete(EndpointDeletionRow).where(EndpointDeletionRow.endpoint_id == endpoint_id)
            )
            if session.get(AccountRow, account) is None:
                session.add(AccountRow(id=account, created_at=now))
                session.flush()  # the account row before its endpoint (foreign key)
            row = EndpointRow(
                id=endpoint_id,
                account_id=account,
                url=data.url,
                description=data.description,
                events=list(data.events),
                secret_ciphertext=self._cipher.encrypt(plain, endpoint_id=endpoint_id),
                enabled=data.enabled,
                paused=False,
                all_accounts=data.all_accounts,
                version=version,
                created_at=now,
                updated_at=now,
                **{name: column_value(name, getattr(data, name)) for name in OPTION_FIELDS},
            )
            session.add(row)
        return endpoint_of(row, now), SecretStr(plain)

    def list_endpoints(self, account: str) -> tuple[Endpoint, ...]:
        """The account's endpoints, oldest first (none for an unknown account)."""
        now = self._clock()
        with self._db.reading() as connection:
            rows = connection.execute(views.ALL_OF_ACCOUNT, {"account": account}).all()
        return tuple(views.as_models(views.shown_fields(rows, now)))

    def page_endpoints(
        self, account: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> tuple[Endpoint, ...]:
        """Up to ``limit`` of the account's endpoints, oldest first, following ``after``.

        ``after`` is the (created_at, id) of the last endpoint of the previous
        page; it need not exist any more. NotFoundError for an unknown account.
        """
        return tuple(views.as_models(self.page_shown(account, limit=limit, after=after)))

    def page_shown(
        self, account: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[ShownEndpoint]:
        """``page_endpoints`` as plain fields, for answers serialised without models."""
        if not ACCOUNT_ID.match(account):
            raise NotFoundError(f"no account {account!r}")
        now = self._clock()
        with self._db.reading() as connection:
            rows = connection.execute(*views.page_statement(account, limit, after)).all()
            # Only an empty page can be an unknown account's.
            if not rows and connection.execute(_ACCOUNT, {"account": account}).first() is None:
                raise NotFoundError(f"no account {account!r}")
        return views.shown_fields(rows, now)

    def get_endpoint(self, account: str, endpoint_id: str) -> Endpoint:
        """One of the account's endpoints; NotFoundError otherwise."""
        return views.as_models([self.get_shown(account, endpoint_id)])[0]

    def get_shown(self, account: str, endpoint_id: str) -> ShownEndpoint:
        """``get_endpoint`` as plain fields, for answers serialised without models."""
        now = self._clock()
        rows: Sequence[Sequence[Any]] = ()
        if ACCOUNT_ID.match(account) and SUBSCRIBER_ID.match(endpoint_id):
            with self._db.reading() as connection:
                parameters = {"account": account, "endpoint_id": endpoint_id}
                rows = connection.execute(views.ONE, parameters).all()
        if not rows:
            raise NotFoundError(f"account {account!r} has no endpoint {endpoint_id!r}")
        return views.shown_fields(rows, now)[0]

    def get_endpoint_with_secrets(self, account: str, endpoint_id: str) -> EndpointWithSecrets:
        """One of the account's endpoints with its secrets (to send it a test event)."""
        now = self._clock()
        with self._db.transaction() as session:
            row = _owned(session, account, endpoint_id)
        return with_secrets(row, now, self._cipher)

    def update_endpoint(self, account: str, endpoint_id: str, patch: EndpointPatch) -> Endpoint:
        """Apply ``patch``; an empty patch changes nothing, not even the version."""
        changes = patch.changes()
        now = self._clock()
        with self._db.transaction() as session:
            if not changes:
                return endpoint_of(_owned(session, account, endpoint_id), now)
            version = _next_version(session)
            row = _owned(session, account, endpoint_id)
            for name, value in changes.items():
                setattr(row, name, column_value(name, value))
            row.version, row.updated_at = version, now
        return endpoint_of(row, now)

    def delete_endpoint(self, account: str, endpoint_id: str) -> int:
        """Delete the endpoint, leaving a tombstone for the workers' changed_since.

        Returns the version of the deletion.
        """
        now = self._clock()
        with self._db.transaction() as session:
            version = _next_version(session)
            row = _owned(session, account, endpoint_id)
            session.delete(row)
            session.add(
                EndpointDeletionRow(
                    endpoint_id=row.id, account_id=row.account_id, version=version, deleted_at=now
                )
            )
        return version

    def rotate_secret(
        self,
        account: str,
        endpoint_id: str,
        overlap_seconds: float,
        *,
        secret: SecretStr | None = None,
    ) -> tuple[Endpoint, SecretStr]:
        """A new secret (``secret``, or a fresh random one); the current one stays valid
        for ``overlap_seconds`` (0: not at all).

        A rotation during another's overlap ends that overlap: there is at most
        one previous secret.
        """
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidInputError(
                f"overlap_seconds: must be between 0 and {MAX_OVERLAP_SECONDS} (7 days)",
                fields=["overlap_seconds"],
            )
        now = self._clock()
        plain = _given_secret(secret) if secret is not None else new_signing_secret()
        with self._db.transaction() as session:
            version = _next_version(session)
            row = _owned(session, account, endpoint_id)
            # Fails (naming the endpoint) under a wrong key before anything is replaced.
            self._cipher.decrypt(row.secret_ciphertext, endpoint_id=row.id)
            if overlap_seconds > 0:
                row.previous_secret_ciphertext = row.secret_ciphertext
                row.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds)
            else:
                row.previous_secret_ciphertext = row.previous_secret_expires_at = None
            row.secret_ciphertext = self._cipher.encrypt(plain, endpoint_id=row.id)
            row.version, row.updated_at = version, now
        return endpoint_of(row, now), SecretStr(plain)

    def set_paused(
        self, account: str, endpoint_id: str, paused: bool, reason: str | None = None
    ) -> Endpoint:
        """Pause (with an optional reason) or resume delivery to the endpoint."""
        if reason is not None and len(reason) > PAUSED_REASON_MAX:
            raise InvalidInputError(
                f"reason: at most {PAUSED_REASON_MAX} characters", fields=["reason"]
            )
        now = self._clock()
        with self._db.transaction() as session:
            version = _next_version(session)
            row = _owned(session, account, endpoint_id)
            if paused:
                # Pausing again only updates the reason; paused_at tells since when.
                row.paused_at = row.paused_at if row.paused else now
                row.paused, row.paused_reason = True, reason
            else:
                row.paused, row.paused_reason, row.paused_at = False, None, None
            row.version, row.updated_at = version, now
        return endpoint_of(row, now)

    # ------------------------------------------------------------------ workers

    def load_all(self) -> Snapshot:
        """Every endpoint with its current and still-valid previous secret."""
        endpoints: list[EndpointWithSecrets] = []
        version = self.load_each(endpoints.append)
        return Snapshot(version=version, endpoints=tuple(endpoints))

    def load_each(self, take: Callable[[EndpointWithSecrets], None]) -> int:
        """Hand every endpoint (as :meth:`load_all` has them) to ``take``; the version.

        Rows are read and decrypted a batch at a time, so only what ``take``
        keeps stays in memory: a worker with 10,000 endpoints never holds every
        row, its model and its subscriber at once (docs/scaling.md).
        """
        now = self._clock()
        with self._db.transaction() as session:
            # The counter first: whatever committed up to it is then visible below.
            version = _current_version(session)
            rows = session.scalars(
                select(EndpointRow)
                .order_by(EndpointRow.version)
                .execution_options(yield_per=_LOAD_BATCH)
            )
            for row in rows:
                take(with_secrets(row, now, self._cipher))
        return version

    def changed_since(self, version: int) -> Changes:
        """Endpoints written and ids deleted after ``version`` (a Snapshot's or Changes')."""
        now = self._clock()
        with self._db.transaction() as session:
            current = _current_version(session)
            if version > current:
                raise StoreError(
                    f"version {version} is ahead of the store's {current}: the database was "
                    "replaced or restored; reload everything with load_all()"
                )
            rows = session.scalars(
                select(EndpointRow)
                .where(EndpointRow.version > version)
                .order_by(EndpointRow.version)
            ).all()
            deleted = session.scalars(
                select(EndpointDeletionRow.endpoint_id)
                .where(EndpointDeletionRow.version > version)
                .order_by(EndpointDeletionRow.version)
            ).all()
        return Changes(
            version=current,
            endpoints=tuple(with_secrets(r, now, self._cipher) for r in rows),
            deleted=tuple(deleted),
        )


def _next_version(session: Session) -> int:
    bumped = session.execute(
        update(VersionCounterRow)
        .where(VersionCounterRow.id == 1)
        .values(value=VersionCounterRow.value + 1)
        .returning(VersionCounterRow.value)
        .execution_options(synchronize_session=False)
    )
    return int(bumped.scalar_one())


def _current_version(session: Session) -> int:
    return int(session.scalars(select(VersionCounterRow.value)).one())


def _given_secret(secret: SecretStr) -> str:
    """A caller's own secret, checked as the subscriber file checks it."""
    plain = secret.get_secret_value()
    if not plain.strip():
        raise InvalidInputError("secret: must not be empty", fields=["secret"])
    return plain


def _owned(session: Session, account: str, endpoint_id: str) -> EndpointRow:
    """The endpoint if it belongs to ``account``; the same NotFoundError either way."""
    row = None
    if ACCOUNT_ID.match(account) and SUBSCRIBER_ID.match(endpoint_id):
        row = session.scalars(
            select(EndpointRow).where(
                EndpointRow.id == endpoint_id, EndpointRow.account_id == account
            )
        ).one_or_none()
    if row is None:
        raise NotFoundError(f"account {account!r} has no endpoint {endpoint_id!r}")
    return row
