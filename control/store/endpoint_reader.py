"""Reading endpoints: an account's own (pages, one by id) and every one for the workers.

An account sees only its own endpoints: another account's id is "not found",
exactly like an unknown one.  Every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from config.errors import NotFoundError, StoreError
from config.subscribers import SUBSCRIBER_ID
from control.store import views
from control.store.cipher import SecretCipher
from control.store.clock import Clock
from control.store.database import Database
from control.store.models import Changes, Endpoint, EndpointWithSecrets, Snapshot
from control.store.records import with_secrets
from control.store.tables import AccountRow, EndpointDeletionRow, EndpointRow
from control.store.version_counter import current_version
from control.store.views import ShownEndpoint
from wire.envelope import ACCOUNT_ID

# Rows fetched per round trip by load_each.
_LOAD_BATCH = 500
_ACCOUNT = select(AccountRow.id).where(AccountRow.id == bindparam("account"))


class EndpointReader:
    """The read half of :class:`~control.store.endpoints.EndpointStore`."""

    _db: Database
    _cipher: SecretCipher
    _clock: Clock

    # ------------------------------------------------------------- accounts' API

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
            row = owned_row(session, account, endpoint_id)
        return with_secrets(row, now, self._cipher)

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
            version = current_version(session)
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
            current = current_version(session)
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


def owned_row(session: Session, account: str, endpoint_id: str) -> EndpointRow:
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
