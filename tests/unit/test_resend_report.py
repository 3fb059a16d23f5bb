"""The resend loop and its report, with the broker faked: what is published, how, and what
the report says when a body is missing, a copy is refused, or the limit cuts the run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import delete

from broker.url import BrokerUrl
from config.errors import (
    BrokerUnavailableError,
    InvalidInputError,
    NotFoundError,
    PublishError,
    StoreUnavailableError,
    UnroutableError,
)
from control.delivery_log import resend as resend_module
from control.delivery_log.resend import resend
from control.delivery_log.resend_request import (
    MAX_RESEND,
    Matching,
    OneEvent,
    Recovery,
    check_request,
)
from control.store.attempt_tables import EventBodyRow
from control.store.attempts import AttemptStore
from control.store.resend_selection import EventFilter, ResendScope
from tests.unit.test_resend_selection import T0, attempt, failed
from wire import contract

BROKER = BrokerUrl.parse("amqp://guest:guest@127.0.0.1:5672/%2F")
SHOP = ResendScope("shop", "acme")
EVERYTHING = EventFilter(since=T0 - timedelta(days=1))


@dataclass
class FakeBroker:
    """Stands in for the connection and the confirm window; ``refuse`` names event ids."""

    published: list[tuple[str, bytes, pika.BasicProperties]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lose_at: str | None = None  # the connection is lost settling this event's window
    windows: int = 0
    pending: list[pika.BasicProperties] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        @contextlib.contextmanager
        def connection(_broker: BrokerUrl, **_names: str) -> Iterator[Any]:
            yield self

        monkeypatch.setattr(resend_module, "blocking_connection", connection)
        monkeypatch.setattr(resend_module, "ConfirmWindow", lambda _connection: self)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        assert exchange == "webhooks.redeliver"
        self.pending.append(properties)
        if properties.message_id not in self.refuse:
            self.published.append((routing_key, body, properties))

    def settle(self) -> list[PublishError | None]:
        self.windows += 1
        pending, self.pending = self.pending, []
        if any(p.message_id == self.lose_at for p in pending):
            raise BrokerUnavailableError("lost RabbitMQ while publishing")
        return [
            UnroutableError("returned") if p.message_id in self.refuse else None for p in pending
        ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AttemptStore]:
    store = AttemptStore.open(f"sqlite:///{tmp_path / 'log.db'}", migrate=True)
    yield store
    store.close()


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    fake.install(monkeypatch)
    return fake


def test_one_event_goes_to_the_endpoint_as_attempt_1_with_its_id_and_account(
    store: AttemptStore, broker: FakeBroker
) -> None:
    store.write([failed("e1", 1, 0), failed("e1", 2, 1), failed("e1", 3, 2, last=True)])
    report = resend(BROKER, store.database, SHOP, OneEvent("e1"))
    assert report.counts() == {"published": 1, "not_found": 0, "refused": 0}
    assert report.complete and report.kind == "event"
    [(routing_key, body, properties)] = broker.published
    assert routing_key == "shop"
    assert body == store.event_body("acme", "e1")
    assert properties.message_id == "e1"
    assert properties.type == "order.created"
    assert properties.content_type == contract.CONTENT_TYPE
    assert properties.delivery_mode == contract.PERSISTENT
    headers = properties.headers or {}
    assert headers[contract.ACCOUNT] == "acme"
    assert headers[contract.ATTEMPT] == 1
    assert contract.RESENT_AT in headers
    assert report.as_document()["events"] == [
        {
            "event_id": "e1",
            "account": "acme",
            "result": "published",
            "event_type": "order.created",
            "reason": None,
        }
    ]


def test_an_event_not_attempted_there_is_not_found_and_nothing_is_sent(
    store: AttemptStore, broker: FakeBroker
) -> None:
    store.write(
        [attempt("theirs", 1, 0, account="globex"), attempt("other", 1, 0, endpoint_id="x")]
    )
    for event_id in ("theirs", "other", "unknown"):
        with pytest.raises(NotFoundError, match="was not attempted at endpoint 'shop'"):
            resend(BROKER, store.database, SHOP, OneEvent(event_id))
    assert broker.published == []


def test_a_missing_body_is_reported_not_found_and_the_rest_still_sent(
    store: AttemptStore, broker: FakeBroker
) -> None:
    store.write([attempt("a", 1, 0), attempt("b", 1, 1), attempt("c", 1, 2)])
    with store.database.transaction() as session:
        session.execute(delete(EventBodyRow).where(EventBodyRow.event_id == "b"))
    report = resend(BROKER, store.database, SHOP, Matching(EVERYTHING))
    assert [(e.event_id, e.result) for e in report.events] == [
        ("a", "published"),
        ("b", "not_found"),
        ("c", "published"),
    ]
    assert "no longer holds its body" in (report.events[1].reason or "")
    assert [p.message_id for _, _, p in broker.published] == ["a", "c"]


def test_a_refused_copy_stops_the_run_and_says_so(
    store: AttemptStore, broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resend_module, "WINDOW", 16)
    store.write([attempt(f"e{i:02}", 1, i) for i in range(40)])
    broker.refuse = {"e17"}
    report = resend(BROKER, store.database, SHOP, Matching(EVERYTHING))
    # Copies go 16 to a window: the second window is settled, then the run stops.
    assert broker.windows == 2
    results = [(e.event_id, e.result) for e in report.events]
    assert results == [(f"e{i:02}", "refused" if i == 17 else "published") for i in range(32)]
    assert "no work queue is bound" in (report.events[17].reason or "")
    assert report.stopped is not None and "refused" in report.stopped
    assert not report.complete
    assert len(broker.published) == 31


def test_the_broker_lost_midway_reports_what_was_confirmed_and_what_is_in_doubt(
    store: AttemptStore, broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resend_module, "WINDOW", 16)
    store.write([attempt(f"e{i:02}", 1, i) for i in range(20)])
    broker.lose_at = "e18"
    report = resend(BROKER, store.database, SHOP, Matching(EVERYTHING))
    assert [e.event_id for e in report.events] == [f"e{i:02}" for i in range(16)]
    assert report.count("published") == 16
    assert report.unconfirmed == ["e16", "e17", "e18", "e19"]
    assert report.stopped is not None and "lost RabbitMQ" in report.stopped
    # Lost with one copy in doubt: a report saying so, not "nothing was sent".
    broker.lose_at = "e00"
    doubt = resend(BROKER, store.database, SHOP, OneEvent("e00"))
    assert (doubt.events, doubt.unconfirmed) == ([], ["e00"])


def test_nothing_sent_is_the_error_itself(
    store: AttemptStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def unreachable(_broker: BrokerUrl, **_names: str) -> Iterator[Any]:
        raise BrokerUnavailableError("cannot connect to RabbitMQ")
        yield

    monkeypatch.setattr(resend_module, "blocking_connection", unreachable)
    store.write([attempt("e1", 1, 0)])
    with pytest.raises(BrokerUnavailableError):
        resend(BROKER, store.database, SHOP, OneEvent("e1"))


def test_the_limit_takes_the_oldest_and_says_more_matched(
    store: AttemptStore, broker: FakeBroker
) -> None:
    store.write([attempt(f"e{i:03}", 1, i) for i in range(25)])
    report = resend(BROKER, store.database, SHOP, Matching(EVERYTHING, limit=12), page_size=5)
    assert [p.message_id for _, _, p in broker.published] == [f"e{i:03}" for i in range(12)]
    assert report.limit_reached and not report.complete
    broker.published.clear()
    exact = resend(BROKER, store.database, SHOP, Matching(EVERYTHING, limit=25), page_size=5)
    assert len(broker.published) == 25 and exact.complete


def test_asked_for_ids_the_filter_did_not_select_are_listed_not_found(
    store: AttemptStore, broker: FakeBroker
) -> None:
    store.write([attempt("a", 1, 0), attempt("theirs", 1, 0, account="globex")])
    report = resend(
        BROKER, store.database, SHOP, Matching(EventFilter(event_ids=frozenset({"a", "theirs"})))
    )
    assert [(e.event_id, e.account, e.result) for e in report.events] == [
        ("a", "acme", "published"),
        ("theirs", None, "not_found"),
    ]


def test_recover_resends_the_dead_letter_only(store: AttemptStore, broker: FakeBroker) -> None:
    store.write(
        [
            failed("dead", 1, 1),
            failed("dead", 2, 2, last=True),
            failed("healed", 1, 1),
            attempt("healed", 2, 2),
        ]
    )
    report = resend(BROKER, store.database, SHOP, Recovery(T0))
    assert [e.event_id for e in report.events] == ["dead"]
    assert report.kind == "recover"
    assert [p.message_id for _, _, p in broker.published] == ["dead"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (OneEvent(""), "event_id"),
        (Matching(EventFilter()), "event_ids"),
        (Matching(EVERYTHING, limit=0), "limit"),
        (Matching(EVERYTHING, limit=MAX_RESEND + 1), "limit"),
        (Matching(EventFilter(since=T0, until=T0)), "until"),
        (Matching(EventFilter(event_ids=frozenset(str(i) for i in range(1001)))), "event_ids"),
        (Recovery(T0, limit=0), "limit"),
    ],
)
def test_bad_requests_name_their_field(request_: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_request(request_)
    assert field in caught.value.fields


def test_a_valid_filter_passes() -> None:
    check_request(Matching(EventFilter(since=datetime.now(UTC)), limit=MAX_RESEND))


def test_the_store_lost_midway_still_reports_the_copies_already_out(
    store: AttemptStore, broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write([attempt(f"e{i:02}", 1, i) for i in range(40)])
    real = resend_module.stored_events
    calls: list[int] = []

    def failing_second_time(database: Any, keys: Any) -> Any:
        calls.append(len(keys))
        if len(calls) == 2:
            raise StoreUnavailableError("the database is unreachable")
        return real(database, keys)

    monkeypatch.setattr(resend_module, "stored_events", failing_second_time)
    report = resend(BROKER, store.database, SHOP, Matching(EVERYTHING))
    assert [(e.event_id, e.result) for e in report.events] == [
        (f"e{i:02}", "published") for i in range(16)
    ]
    assert report.unconfirmed == []
    assert report.stopped is not None and "unreachable" in report.stopped
