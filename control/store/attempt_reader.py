"""Reading the delivery log as a merchant (one account's endpoints) or as an operator (all).

Three questions, the same for the API and ``webhook-log``: which attempts match
a filter (a page, :mod:`control.store.attempt_listing`), what happened to one
event (its attempts per endpoint, and its body), and how one endpoint is doing
(:mod:`control.store.attempt_summary`).  ``account=None`` is the operator's
view of everything; an account sees only attempts at its own endpoints
(:mod:`control.store.attempt_scope`), and anything else is "not found".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import ColumnElement, Connection, select, true

from config.errors import NotFoundError
from control.store.attempt_listing import AttemptFilter, AttemptPage, list_attempts
from control.store.attempt_scope import AccountScope, account_scope, endpoint_owned
from control.store.attempt_summary import EndpointFigures, summarize
from control.store.attempt_tables import AttemptRow, EventBodyRow
from control.store.attempts import LoggedAttempt, logged
from control.store.clock import Clock, utc_now
from control.store.database import Database
from control.store.tables import EndpointDeletionRow, EndpointRow

# More attempts than one event ever has (attempts x endpoints); a bound all the same.
MAX_EVENT_ATTEMPTS = 5000


@dataclass(frozen=True)
class EventHistory:
    """One event: its account and type, its body if the log keeps it, and its attempts per
    endpoint (each oldest first; endpoints in the order of their first attempt)."""

    event_id: str
    account: str
    event_type: str
    body: bytes | None
    endpoints: dict[str, list[LoggedAttempt]] = field(default_factory=dict)


class AttemptReader:
    """The delivery log's read side, over the store's database."""

    def __init__(self, database: Database, *, clock: Clock = utc_now) -> None:
        self._db = database
        self._clock = clock

    def attempts(
        self,
        account: str | None,
        where: AttemptFilter,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AttemptPage:
        """A page of the attempts matching ``where`` that ``account`` may see, newest first.

        An ``endpoint_ids`` of one id the account does not own is NotFoundError.
        """
        if account is not None:
            endpoint_ids = where.endpoint_ids
            with self._db.reading() as connection:
                scope = account_scope(connection, account)
                if endpoint_ids is not None and len(endpoint_ids) == 1:
                    scope = self._owned(connection, scope, endpoint_ids[0])
            where = replace(where, scope=scope)
        return list_attempts(self._db, where, limit=limit, cursor=cursor)

    def event(self, account: str | None, event_id: str) -> list[EventHistory]:
        """What happened to ``event_id``: one history per event account (an id is normally
        one account's; the operator may see two accounts' events that share an id).

        For an account: only attempts at its endpoints, and NotFoundError when there is none.
        """
        with self._db.transaction() as session:
            connection = session.connection()
            visible: ColumnElement[bool] = true()
            if account is not None:
                visible = account_scope(connection, account).condition()
            rows = session.scalars(
                select(AttemptRow)
                .where(AttemptRow.event_id == event_id, visible)
                # A replay starts again at attempt 1: time first, then the number.
                .order_by(AttemptRow.started_at, AttemptRow.attempt, AttemptRow.id)
                .limit(MAX_EVENT_ATTEMPTS)
            )
            histories = _by_account([logged(row) for row in rows])
            if account is not None:
                # The account's own event if it has one by this id; else the one it
                # received at an all-accounts endpoint.
                own = [h for h in histories if h.account == account]
                histories = (own or histories)[:1]
            if not histories:
                raise NotFoundError(f"no attempt of event {event_id!r} is logged")
            return [_with_body(connection, history) for history in histories]

    def summary(self, account: str | None, endpoint_id: str) -> EndpointFigures:
        """The endpoint's last hour and last day (NotFoundError: not the account's, or
        for the operator an id neither the store nor the log knows)."""
        now = self._clock()
        with self._db.reading() as connection:
            if account is not None:
                scope = self._owned(connection, account_scope(connection, account), endpoint_id)
                condition = scope.condition()
            else:
                condition = AttemptRow.endpoint_id == endpoint_id
                if not _known(connection, endpoint_id):
                    raise NotFoundError(f"no endpoint {endpoint_id!r} in the store or the log")
            return summarize(connection, condition, now)

    def _owned(self, connection: Connection, scope: AccountScope, endpoint_id: str) -> AccountScope:
        if not endpoint_owned(connection, scope.account, endpoint_id):
            raise NotFoundError(f"account {scope.account!r} has no endpoint {endpoint_id!r}")
        return scope.narrowed_to(endpoint_id)


def _by_account(attempts: list[LoggedAttempt]) -> list[EventHistory]:
    histories: dict[str, EventHistory] = {}
    for attempt in attempts:
        record = attempt.record
        history = histories.get(record.account)
        if history is None:
            history = EventHistory(record.event_id, record.account, record.event_type, None)
            histories[record.account] = history
        history.endpoints.setdefault(record.endpoint_id, []).append(attempt)
    return list(histories.values())


def _with_body(connection: Connection, history: EventHistory) -> EventHistory:
    body = connection.execute(
        select(EventBodyRow.body).where(
            EventBodyRow.account_id == history.account, EventBodyRow.event_id == history.event_id
        )
    ).scalar()
    return replace(history, body=body)


def _known(connection: Connection, endpoint_id: str) -> bool:
    for query in (
        select(EndpointRow.id).where(EndpointRow.id == endpoint_id),
        select(EndpointDeletionRow.endpoint_id).where(
            EndpointDeletionRow.endpoint_id == endpoint_id
        ),
        select(AttemptRow.id).where(AttemptRow.endpoint_id == endpoint_id).limit(1),
    ):
        if connection.execute(query).first() is not None:
            return True
    return False
