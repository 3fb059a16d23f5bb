"""Which logged attempts an account may see: those made at endpoints it owns.

``delivery_attempts.account_id`` is the *event's* account, not the endpoint
owner's.  A plain endpoint only ever receives its owner's events, so its
attempts are those with the owner's account and its id (the id also of a
deleted endpoint: its tombstone keeps the owner).  An ``all_accounts``
endpoint receives every account's events; those attempts belong to its owner
too, but only from the endpoint's creation on: an id can be given at creation,
so an earlier endpoint with the same id may have been another account's.  A
tombstone does not say whether the endpoint was an all-accounts one: once it is
deleted, only its owner's own events stay visible (never too much).
Nothing else is visible: not the account's own events delivered to another
account's all-accounts endpoint, not another account's endpoint (not found).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, or_, select, union

from config.errors import NotFoundError
from control.store.attempt_tables import AttemptRow
from control.store.tables import AccountRow, EndpointDeletionRow, EndpointRow
from wire.envelope import ACCOUNT_ID


@dataclass(frozen=True)
class AccountScope:
    """The attempts one account may see, optionally narrowed to one of its endpoints."""

    account: str
    # The account's all-accounts endpoints: (id, created_at).
    broadcast: tuple[tuple[str, datetime], ...] = ()
    endpoint_id: str | None = None

    def narrowed_to(self, endpoint_id: str) -> AccountScope:
        """The same scope, at one endpoint only (one the account owns: checked before)."""
        return replace(self, endpoint_id=endpoint_id)

    def condition(self) -> ColumnElement[bool]:
        """The SQL condition on ``delivery_attempts`` rows."""
        own_event = AttemptRow.account_id == self.account
        broadcast = [
            (endpoint_id, created_at)
            for endpoint_id, created_at in self.broadcast
            if self.endpoint_id in (None, endpoint_id)
        ]
        others = [
            and_(
                AttemptRow.endpoint_id == endpoint_id,
                or_(own_event, AttemptRow.started_at >= created_at),
            )
            for endpoint_id, created_at in broadcast
        ]
        if self.endpoint_id is not None:
            # One endpoint: a plain index range on (endpoint_id, started_at).
            if others:
                return others[0]
            return and_(AttemptRow.endpoint_id == self.endpoint_id, own_event)
        owned = union(
            select(EndpointRow.id).where(EndpointRow.account_id == self.account),
            select(EndpointDeletionRow.endpoint_id).where(
                EndpointDeletionRow.account_id == self.account
            ),
        )
        mine = and_(own_event, AttemptRow.endpoint_id.in_(owned.scalar_subquery()))
        return or_(mine, *others) if others else mine


def account_scope(connection: Connection, account: str) -> AccountScope:
    """The scope of ``account``; NotFoundError when the store has no such account."""
    if not ACCOUNT_ID.match(account):
        raise NotFoundError(f"no account {account!r}")
    if connection.execute(select(AccountRow.id).where(AccountRow.id == account)).first() is None:
        raise NotFoundError(f"no account {account!r}")
    rows = connection.execute(
        select(EndpointRow.id, EndpointRow.created_at)
        .where(EndpointRow.account_id == account, EndpointRow.all_accounts)
        .order_by(EndpointRow.id)
    ).all()
    return AccountScope(account, tuple((row[0], row[1]) for row in rows))


def endpoint_owned(connection: Connection, account: str, endpoint_id: str) -> bool:
    """True if ``endpoint_id`` is the account's, now or before it was deleted."""
    current = select(EndpointRow.id).where(
        EndpointRow.id == endpoint_id, EndpointRow.account_id == account
    )
    deleted = select(EndpointDeletionRow.endpoint_id).where(
        EndpointDeletionRow.endpoint_id == endpoint_id, EndpointDeletionRow.account_id == account
    )
    return connection.execute(union(current, deleted)).first() is not None
