"""Resending logged events to one endpoint: one event, a filter's events, or a recovery.

Each copy is built from the body the log keeps, as the producer would have
published it (same event id, so receivers see the same ``X-Webhook-Id``), at
attempt 1, and goes to ``webhooks.redeliver`` with routing key = the endpoint
id: only that endpoint's work queue is bound there, and its worker signs and
delivers it like any event.  Publishes are mandatory and confirmed, a few at a
time (:class:`broker.confirm_window.ConfirmWindow`); an event is reported
``published`` only once the broker confirmed it.

Isolation comes from the selection (:mod:`control.store.resend_selection`):
only events of the endpoint's account that were attempted at the endpoint are
ever read.  The worker checks the account header again before delivering.

Bounded: at most ``limit`` events per request (``MAX_RESEND`` at most), their
ids read a page at a time and their bodies a few at a time, so memory does not
grow with what matches.  A run that stops early (the limit, a refused copy, the
broker or the store lost after something was sent) says so in its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pika
from pika.adapters.blocking_connection import BlockingConnection

from broker.confirm_window import ConfirmWindow
from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.errors import (
    BrokerError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    TopologyError,
    UnroutableError,
)
from config.topology import REDELIVER_EXCHANGE
from control.dead_letters.model import iso_utc
from control.delivery_log.resend_request import (
    EventResult,
    Matching,
    OneEvent,
    Recovery,
    ResendReport,
    ResendRequest,
    check_request,
    kind_of,
)
from control.store.database import Database
from control.store.resend_selection import (
    EventFilter,
    EventKey,
    ResendScope,
    StoredEvent,
    events_matching,
    events_to_recover,
    stored_events,
)
from wire import contract

# Event keys read per query (small: ids and a time; each query groups every
# matching attempt, so fewer, larger pages cost less), and bodies per query (a
# body may be up to 1 MiB).
PAGE_SIZE = 1_000
BODY_CHUNK = 16
# Copies published before waiting for their confirms (one quorum commit per
# window instead of one per copy), and the bytes they may hold in pika's buffer.
WINDOW = 256
WINDOW_BYTES = 8 * 1024 * 1024

NO_BODY = "the delivery log no longer holds its body (retention, or never recorded)"
NOT_MATCHED = "no attempt of it at this endpoint matches (unknown, or not this endpoint's)"


def resend_properties(key: EventKey, stored: StoredEvent, now: datetime) -> pika.BasicProperties:
    """The copy's properties: the producer's (same event id and account), attempt 1."""
    return pika.BasicProperties(
        content_type=contract.CONTENT_TYPE,
        delivery_mode=contract.PERSISTENT,
        message_id=key.event_id,
        type=stored.event_type,
        timestamp=int(now.timestamp()),
        headers={
            contract.ACCOUNT: key.account,
            contract.ATTEMPT: 1,
            contract.RESENT_AT: iso_utc(now),
        },
    )


def resend(
    broker: BrokerUrl,
    database: Database,
    scope: ResendScope,
    request: ResendRequest,
    *,
    page_size: int = PAGE_SIZE,
) -> ResendReport:
    """Resend what ``request`` selects to ``scope``'s endpoint; the per-event report.

    NotFoundError when a single event was never attempted at this endpoint (or
    is another account's); InvalidInputError for a bad request; BrokerError or
    StoreError when nothing was sent.
    """
    check_request(request)
    report = ResendReport(scope.endpoint_id, kind_of(request))
    try:
        with blocking_connection(broker, name="webhook-resend", operation="resend") as connection:
            _resend_all(connection, database, scope, request, report, page_size)
    except (BrokerError, StoreError) as exc:
        if isinstance(exc, InvalidInputError) or not (
            report.count("published") or report.unconfirmed
        ):
            raise
        # Some copies are out: the report must say which, and which are in doubt.
        report.stopped = f"stopped early: {exc}"
    _note_unmatched(request, report)
    return report


class _Batch:
    """The events since the last settle, in selection order, and the copies awaiting confirms."""

    def __init__(self, window: ConfirmWindow, scope: ResendScope, report: ResendReport) -> None:
        self._window = window
        self._scope = scope
        self._report = report
        self._results: list[EventResult | None] = []
        self._sent: list[tuple[int, EventKey, str]] = []
        self.bytes = 0

    @property
    def copies(self) -> int:
        return len(self._sent)

    def not_found(self, key: EventKey) -> None:
        self._results.append(EventResult(key.event_id, key.account, "not_found", reason=NO_BODY))

    def send(self, key: EventKey, event: StoredEvent, properties: pika.BasicProperties) -> None:
        self._window.publish(REDELIVER_EXCHANGE, self._scope.endpoint_id, event.body, properties)
        self._sent.append((len(self._results), key, event.event_type))
        self._results.append(None)
        self._report.unconfirmed.append(key.event_id)
        self.bytes += len(event.body)

    def settle(self) -> bool:
        """Wait for the confirms, report every event in order; False once a copy was refused."""
        results, sent = self._results, self._sent
        self._results, self._sent, self.bytes = [], [], 0
        try:
            outcomes = self._window.settle() if sent else []
        except BrokerError as exc:
            if isinstance(exc, TopologyError):
                # No webhooks.redeliver: the broker routed none of them.
                self._report.unconfirmed.clear()
            self._report.events += [result for result in results if result is not None]
            raise
        self._report.unconfirmed.clear()
        refused = None
        for (index, key, event_type), error in zip(sent, outcomes, strict=True):
            if error is None:
                results[index] = EventResult(key.event_id, key.account, "published", event_type)
            else:
                refused = refused or _refusal(self._scope, error)
                results[index] = EventResult(
                    key.event_id, key.account, "refused", event_type, refused
                )
        self._report.events += [result for result in results if result is not None]
        if refused is not None:
            # Same endpoint, same queue: every later copy would be refused too.
            self._report.stopped = f"stopped at the first refused copy: {refused}"
            return False
        return True


def _resend_all(
    connection: BlockingConnection,
    database: Database,
    scope: ResendScope,
    request: ResendRequest,
    report: ResendReport,
    page_size: int,
) -> None:
    batch = _Batch(ConfirmWindow(connection), scope, report)
    now = datetime.now(UTC)
    try:
        for chunk in _chunks(_selected(database, scope, request, report, page_size), BODY_CHUNK):
            stored = stored_events(database, chunk)
            for key in chunk:
                event = stored.get((key.account, key.event_id))
                if event is None:
                    batch.not_found(key)
                else:
                    batch.send(key, event, resend_properties(key, event, now))
            if (batch.copies >= WINDOW or batch.bytes >= WINDOW_BYTES) and not batch.settle():
                return
    except StoreError:
        batch.settle()  # the copies already out are confirmed and reported before giving up
        raise
    batch.settle()


def _refusal(scope: ResendScope, error: Exception) -> str:
    if isinstance(error, UnroutableError):
        return (
            f"no work queue is bound to {REDELIVER_EXCHANGE} for endpoint "
            f"{scope.endpoint_id!r}: its queue is gone (endpoint deleted or disabled, or no "
            "worker has declared it yet)"
        )
    return f"RabbitMQ refused the copy for endpoint {scope.endpoint_id!r} (its queue is full?)"


def _selected(
    database: Database,
    scope: ResendScope,
    request: ResendRequest,
    report: ResendReport,
    page_size: int,
) -> Iterator[EventKey]:
    """The events to resend, in order, at most the request's limit (noting if more match)."""
    if isinstance(request, OneEvent):
        keys = events_matching(
            database, scope, EventFilter(event_ids=frozenset([request.event_id])), limit=10
        )
        if not keys:
            raise NotFoundError(
                f"event {request.event_id!r} was not attempted at endpoint "
                f"{scope.endpoint_id!r} of account {scope.account!r} "
                "(or the delivery log no longer holds it)"
            )
        yield from keys
        return
    taken, after = 0, None
    while True:
        want = min(page_size, request.limit - taken)
        # One more than wanted tells whether anything is left after this page.
        page = _page(database, scope, request, after, want + 1)
        more = len(page) > want
        page = page[:want]
        yield from page
        taken += len(page)
        if not more:
            return
        if taken >= request.limit:
            report.limit_reached = True
            return
        after = page[-1]


def _page(
    database: Database,
    scope: ResendScope,
    request: Matching | Recovery,
    after: EventKey | None,
    limit: int,
) -> list[EventKey]:
    if isinstance(request, Matching):
        return events_matching(database, scope, request.where, after=after, limit=limit)
    return events_to_recover(database, scope, request.since, after=after, limit=limit)


def _chunks(keys: Iterator[EventKey], size: int) -> Iterator[list[EventKey]]:
    chunk: list[EventKey] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _note_unmatched(request: ResendRequest, report: ResendReport) -> None:
    """List asked-for event ids the filter did not select (only when nothing cut the run)."""
    if not isinstance(request, Matching) or report.limit_reached or report.stopped:
        return
    seen = {event.event_id for event in report.events}
    for event_id in sorted(request.where.event_ids - seen):
        report.events.append(EventResult(event_id, None, "not_found", reason=NOT_MATCHED))
