"""Resending logged events to one endpoint: one event, a filter's events, or a recovery.

Each copy is built from the body the log keeps, as the producer would have
published it (same event id, so receivers see the same ``X-Webhook-Id``), at
attempt 1, and goes to ``webhooks.redeliver`` with routing key = the endpoint
id: only that endpoint's work queue is bound there, and its worker signs and
delivers it like any event.  Publishes are mandatory and confirmed, one at a
time; an event is reported ``published`` only once the broker confirmed it.

Isolation comes from the selection (:mod:`control.store.resend_selection`):
only events of the endpoint's account that were attempted at the endpoint are
ever read.  The worker checks the account header again before delivering.

Bounded: at most ``limit`` events per request (``MAX_RESEND`` at most), read a
page at a time and their bodies a few at a time, so memory does not grow with
what matches.  A run that stops early (the limit, a refused copy, the broker or
the store lost after something was published) says so in its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pika
from pika.adapters.blocking_connection import BlockingChannel

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.errors import BrokerError, InvalidInputError, NotFoundError, PublishError, StoreError
from control.dead_letters.model import iso_utc
from control.dead_letters.replay import publish_to_work_queue
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

MAX_RESEND = 10_000
DEFAULT_LIMIT = 1_000
MAX_EVENT_IDS = 1_000
# Events read per query, and bodies per query (a body may be up to 1 MiB).
PAGE_SIZE = 100
BODY_CHUNK = 16

Result = Literal["published", "not_found", "refused"]
Kind = Literal["event", "filter", "recover"]

NO_BODY = "the delivery log no longer holds its body (retention, or never recorded)"
NOT_MATCHED = "no attempt of it at this endpoint matches (unknown, or not this endpoint's)"


@dataclass(frozen=True)
class OneEvent:
    """Resend this event."""

    event_id: str


@dataclass(frozen=True)
class Matching:
    """Resend the events the filter selects, oldest first, at most ``limit``."""

    where: EventFilter
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class Recovery:
    """Resend what failed since ``since`` and has not succeeded since, at most ``limit``."""

    since: datetime
    limit: int = DEFAULT_LIMIT


ResendRequest = OneEvent | Matching | Recovery


@dataclass(frozen=True)
class EventResult:
    """What became of one event."""

    event_id: str
    account: str | None  # None for an asked-for id the log has nothing of here
    result: Result
    event_type: str | None = None
    reason: str | None = None


@dataclass
class ResendReport:
    """Every event considered, in order, and whether the run stopped before the end."""

    endpoint_id: str
    kind: Kind
    events: list[EventResult] = field(default_factory=list)
    # More events matched than the limit allowed: the oldest ``limit`` were taken.
    limit_reached: bool = False
    # Why the run ended before every selected event was tried, if it did.
    stopped: str | None = None

    def count(self, result: Result) -> int:
        """How many events ended as ``result``."""
        return sum(1 for event in self.events if event.result == result)

    def counts(self) -> dict[str, int]:
        """Events per result (every result named, zeros included)."""
        return {name: self.count(name) for name in ("published", "not_found", "refused")}

    @property
    def complete(self) -> bool:
        """Whether every selected event was tried."""
        return self.stopped is None and not self.limit_reached

    def as_document(self) -> dict[str, Any]:
        """The report as JSON-ready data (the API's answer, ``webhook-log --format json``)."""
        return {
            "endpoint_id": self.endpoint_id,
            "request": self.kind,
            **self.counts(),
            "complete": self.complete,
            "limit_reached": self.limit_reached,
            "stopped": self.stopped,
            "events": [asdict(event) for event in self.events],
        }


def kind_of(request: ResendRequest) -> Kind:
    """``event``, ``filter`` or ``recover``."""
    if isinstance(request, OneEvent):
        return "event"
    return "filter" if isinstance(request, Matching) else "recover"


def check_request(request: ResendRequest) -> None:
    """InvalidInputError (naming the field) for a request that cannot be run."""
    if isinstance(request, OneEvent):
        if not request.event_id:
            raise InvalidInputError("event_id: must not be empty", fields=["event_id"])
        return
    if not 1 <= request.limit <= MAX_RESEND:
        raise InvalidInputError(f"limit: must be 1-{MAX_RESEND}", fields=["limit"])
    if isinstance(request, Matching):
        where = request.where
        if len(where.event_ids) > MAX_EVENT_IDS:
            raise InvalidInputError(
                f"event_ids: at most {MAX_EVENT_IDS} per request", fields=["event_ids"]
            )
        if not where.describe():
            raise InvalidInputError(
                "filter: give event_id, or at least one of event_ids, outcome, status, "
                "since, until (an empty filter would resend everything)",
                fields=["event_ids", "outcome", "status", "since", "until"],
            )
        if where.since and where.until and where.until <= where.since:
            raise InvalidInputError("until: must be after since", fields=["until"])


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
    StoreError when nothing could be published.
    """
    check_request(request)
    report = ResendReport(scope.endpoint_id, kind_of(request))
    try:
        with blocking_connection(broker, name="webhook-resend", operation="resend") as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            _resend_all(channel, database, scope, request, report, page_size)
    except (BrokerError, StoreError) as exc:
        if isinstance(exc, InvalidInputError) or report.count("published") == 0:
            raise
        # Some copies are out (and confirmed): the report must say which.
        report.stopped = f"stopped early: {exc}"
    _note_unmatched(request, report)
    return report


def _resend_all(
    channel: BlockingChannel,
    database: Database,
    scope: ResendScope,
    request: ResendRequest,
    report: ResendReport,
    page_size: int,
) -> None:
    now = datetime.now(UTC)
    for chunk in _chunks(_selected(database, scope, request, report, page_size), BODY_CHUNK):
        stored = stored_events(database, chunk)
        for key in chunk:
            event = stored.get((key.account, key.event_id))
            if event is None:
                report.events.append(
                    EventResult(key.event_id, key.account, "not_found", reason=NO_BODY)
                )
                continue
            body_properties = resend_properties(key, event, now)
            try:
                publish_to_work_queue(channel, scope.endpoint_id, event.body, body_properties)
            except PublishError as exc:
                # Same endpoint, same queue: every later copy would be refused too.
                report.events.append(
                    EventResult(key.event_id, key.account, "refused", event.event_type, str(exc))
                )
                report.stopped = f"stopped at the first refused copy: {exc}"
                return
            report.events.append(
                EventResult(key.event_id, key.account, "published", event.event_type)
            )


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
