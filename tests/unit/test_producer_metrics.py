"""producer/metrics.py: what Publisher, publish_many and SpoolingPublisher count.

A fake broker stands in for RabbitMQ (the integration test uses a real one);
the spool runs on tests/unit/test_spool_bookkeeping.py's fake publisher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika.exceptions
import pytest
from prometheus_client import REGISTRY, generate_latest

from broker.url import BrokerUrl
from config.errors import (
    BrokerUnavailableError,
    NackedError,
    PayloadError,
    PublishError,
    TopologyError,
    UnroutableError,
)
from producer import Publisher, metrics
from producer.backoff import Transient
from producer.outgoing import Outgoing, nacked_error, unroutable_error
from producer.spool import SpoolingPublisher
from tests.support.worker_harness import ACCOUNT
from tests.unit.test_spool_bookkeeping import FakePublisher
from wire.samples import sample_data

PUBLISHED = "webhook_producer_events_published_total"
ORDER = sample_data("order.created")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """Counter values now, to compare with later ones (the registry is process-wide)."""

    def __init__(self) -> None:
        self._before = self._read()

    @staticmethod
    def _read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in REGISTRY.collect()
            if family.name.startswith("webhook_producer_")
            for sample in family.samples
            if not sample.name.endswith(("_bucket", "_sum", "_created"))
        }

    def changes(self) -> dict[str, float]:
        """``name{label=value,...}`` -> how much it changed, for what changed."""
        after = self._read()
        changed: dict[str, float] = {}
        for key, now in after.items():
            delta = now - self._before.get(key, 0.0)
            if delta:
                name, labels = key
                changed[f"{name}{{{','.join(f'{k}={v}' for k, v in labels)}}}"] = delta
        return changed


def published(event_class: str, outcome: str) -> str:
    return f"{PUBLISHED}{{event_type_class={event_class},outcome={outcome}}}"


def calls(call: str) -> str:
    return f"webhook_producer_publish_duration_seconds_count{{call={call}}}"


# ------------------------------------------------------------------ labels


def test_event_type_class_names_only_the_order_events() -> None:
    assert metrics.event_type_class("order.created") == "order.created"
    assert metrics.event_type_class("order.cancelled") == "order.cancelled"
    for other in ("note.added", "order", "order.created.v2", "Not A Type", 42, None):
        assert metrics.event_type_class(other) == "other"
    assert set(metrics.EVENT_TYPE_CLASSES) == {
        "order.created",
        "order.updated",
        "order.cancelled",
        "other",
    }


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (PayloadError("bad"), "invalid"),
        (UnroutableError("no queue"), "unroutable"),
        (NackedError("refused"), "nacked"),
        (PublishError("channel closed by the broker"), "nacked"),
        (TopologyError("conflicting arguments"), "nacked"),
        (BrokerUnavailableError("gone"), "unavailable"),
    ],
)
def test_outcome_of_each_error(error: Exception, outcome: str) -> None:
    assert metrics.outcome_of(error) == outcome
    assert outcome in metrics.OUTCOMES


def test_unknown_outcomes_and_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="not a publish outcome"):
        metrics.outcome_of(RuntimeError("a bug"))
    with pytest.raises(ValueError, match="unknown outcome"):
        metrics.count_event("order.created", "lost")
    with pytest.raises(ValueError, match="unknown call"), metrics.timed("publish_some"):
        pass


def test_exposition_has_bounded_labels_and_conventional_names() -> None:
    metrics.count_event("order.created", "published")
    metrics.PUBLISH_DURATION.labels("publish").observe(0.01)
    text = generate_latest(REGISTRY).decode()
    families = [f for f in REGISTRY.collect() if f.name.startswith("webhook_producer_")]
    assert {f.name for f in families} >= {
        "webhook_producer_events_published",
        "webhook_producer_publish_duration_seconds",
        "webhook_producer_spool_depth",
        "webhook_producer_spooled",
        "webhook_producer_spool_flushed",
        "webhook_producer_spool_rejected",
    }
    allowed = {"event_type_class", "outcome", "call", "reason", "le"}
    for family in families:
        if family.type == "counter":
            assert f"# TYPE {family.name}_total counter" in text
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)
    # Only the producer's own lines: the process's registry holds other families too.
    ours = "\n".join(line for line in text.splitlines() if "webhook_producer_" in line)
    assert 'outcome="published"' in ours and "account" not in ours


# --------------------------------------------------------- Publisher.publish


class FakeChannel:
    """The blocking channel ``publish`` uses: fails the way it is told to, or takes it."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.sent = 0

    def basic_publish(self, *_args: Any, **_kwargs: Any) -> None:
        if self.failure is not None:
            raise self.failure
        self.sent += 1


def _publisher(channel: Callable[[], Any], attempts: int = 1) -> Publisher:
    publisher = Publisher(
        BrokerUrl.parse("amqp://guest:guest@127.0.0.1:1/%2F"),
        connect_attempts=attempts,
        backoff_initial_seconds=0,
    )
    publisher._ensure_channel = channel  # type: ignore[method-assign]
    return publisher


@pytest.mark.parametrize(
    ("failure", "error", "outcome"),
    [
        (None, None, "published"),
        (pika.exceptions.UnroutableError([]), UnroutableError, "unroutable"),
        (pika.exceptions.NackError([]), NackedError, "nacked"),
        (pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED"), PublishError, "nacked"),
        (pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND"), UnroutableError, "unroutable"),
    ],
)
def test_publish_counts_each_event_once_by_outcome(
    failure: BaseException | None, error: type[Exception] | None, outcome: str
) -> None:
    channel = FakeChannel(failure)
    publisher = _publisher(lambda: channel)
    counts = Counts()
    if error is None:
        publisher.publish("order.created", ORDER, account=ACCOUNT)
    else:
        with pytest.raises(error):
            publisher.publish("order.created", ORDER, account=ACCOUNT)
    assert counts.changes() == {published("order.created", outcome): 1, calls("publish"): 1}


def test_publish_counts_unavailable_once_after_the_retries() -> None:
    attempts: list[int] = []

    def down() -> Any:
        attempts.append(1)
        raise Transient("connection refused")

    publisher = _publisher(down, attempts=3)
    counts = Counts()
    with pytest.raises(BrokerUnavailableError):
        publisher.publish("note.added", {"n": 1}, account=ACCOUNT)
    assert len(attempts) == 3
    assert counts.changes() == {published("other", "unavailable"): 1, calls("publish"): 1}


def test_invalid_events_are_counted_but_not_timed() -> None:
    publisher = _publisher(lambda: FakeChannel())
    counts = Counts()
    with pytest.raises(PayloadError):
        publisher.publish("order.created", {"id": "not the page's order"}, account=ACCOUNT)
    with pytest.raises(PayloadError):
        publisher.publish("Not A Type", {}, account=ACCOUNT)
    assert counts.changes() == {
        published("order.created", "invalid"): 1,
        published("other", "invalid"): 1,
    }


# ----------------------------------------------------- Publisher.publish_many


class FakeConfirmChannel:
    """A pipelined confirm channel whose broker confirms at each wait.

    Events of type ``x.unroutable`` come back returned, ``x.nacked`` nacked;
    ``lose_link`` makes the next wait fail like a dropped connection.
    """

    is_open = True

    def __init__(self) -> None:
        self.waiting: list[tuple[int, Outgoing]] = []
        self.settled: list[tuple[tuple[int, Outgoing], PublishError | None]] = []
        self.lose_link = False

    @property
    def in_flight(self) -> int:
        return len(self.waiting)

    def publish(self, index: int, outgoing: Outgoing) -> None:
        self.waiting.append((index, outgoing))

    def wait_until(self, _ready: Callable[[], bool]) -> None:
        if self.lose_link:
            raise pika.exceptions.AMQPConnectionError("connection reset")
        for token in self.waiting:
            outgoing = token[1]
            error: PublishError | None = None
            if outgoing.event_type == "x.unroutable":
                error = unroutable_error(outgoing.routing_key)
            elif outgoing.event_type == "x.nacked":
                error = nacked_error(outgoing.event_id, outgoing.event_type)
            self.settled.append((token, error))
        self.waiting = []

    def take_settled(self) -> list[tuple[tuple[int, Outgoing], PublishError | None]]:
        settled, self.settled = self.settled, []
        return settled


def _batch_publisher(channel: FakeConfirmChannel, *, reopen: bool = True) -> Publisher:
    publisher = _publisher(lambda: FakeChannel())
    opened: list[int] = []

    def open_confirm_channel() -> FakeConfirmChannel:
        if opened and not reopen:
            raise BrokerUnavailableError("RabbitMQ is unavailable")
        opened.append(1)
        return channel

    publisher.open_confirm_channel = open_confirm_channel  # type: ignore[assignment,method-assign]
    publisher.connection_lost = lambda exc: "connection reset"  # type: ignore[method-assign]
    return publisher


def test_publish_many_counts_every_event_by_outcome() -> None:
    publisher = _batch_publisher(FakeConfirmChannel())
    counts = Counts()
    ids = publisher.publish_many(
        [(ACCOUNT, "order.created", ORDER), (ACCOUNT, "note.added", {"n": 1})] * 3
    )
    assert len(ids) == 6
    assert counts.changes() == {
        published("order.created", "published"): 3,
        published("other", "published"): 3,
        calls("publish_many"): 1,
    }


def test_publish_many_counts_the_failed_event_and_those_confirmed_after_it() -> None:
    publisher = _batch_publisher(FakeConfirmChannel())
    counts = Counts()
    events: list[Any] = [
        (ACCOUNT, "order.created", ORDER),
        (ACCOUNT, "x.unroutable", {}),
        (ACCOUNT, "x.nacked", {}),
        (ACCOUNT, "note.added", {}),
    ]
    with pytest.raises(UnroutableError, match="event 2 of the batch"):
        publisher.publish_many(events)
    # All four were on the wire when the first failure came back.
    assert counts.changes() == {
        published("order.created", "published"): 1,
        published("other", "unroutable"): 1,
        published("other", "nacked"): 1,
        published("other", "published"): 1,
        calls("publish_many"): 1,
    }


def test_publish_many_counts_an_invalid_event_and_sends_nothing_after_it() -> None:
    publisher = _batch_publisher(FakeConfirmChannel())
    counts = Counts()
    with pytest.raises(PayloadError):
        publisher.publish_many(
            [
                (ACCOUNT, "note.added", {}),
                (ACCOUNT, "order.created", {"id": "incomplete"}),
                (ACCOUNT, "note.added", {}),
            ]
        )
    assert counts.changes() == {
        published("other", "published"): 1,
        published("order.created", "invalid"): 1,
        calls("publish_many"): 1,
    }


def test_publish_many_counts_unconfirmed_events_unavailable_when_the_broker_stays_away() -> None:
    channel = FakeConfirmChannel()
    channel.lose_link = True
    publisher = _batch_publisher(channel, reopen=False)
    counts = Counts()
    with pytest.raises(BrokerUnavailableError):
        publisher.publish_many([(ACCOUNT, "order.created", ORDER)] * 2 + [(ACCOUNT, "a.b", {})])
    assert counts.changes() == {
        published("order.created", "unavailable"): 2,
        published("other", "unavailable"): 1,
        calls("publish_many"): 1,
    }


# ---------------------------------------------------------- SpoolingPublisher


def depth() -> float:
    return value("webhook_producer_spool_depth")


def _spooler(tmp_path: Path, fake: FakePublisher, name: str = "spool.db") -> SpoolingPublisher:
    return SpoolingPublisher(fake, tmp_path / name)  # type: ignore[arg-type]


def spooled(reason: str) -> str:
    assert reason in metrics.SPOOL_REASONS
    return f"webhook_producer_spooled_total{{reason={reason}}}"


def rejected(reason: str) -> str:
    assert reason in metrics.REJECT_REASONS
    return f"webhook_producer_spool_rejected_total{{reason={reason}}}"


def test_spool_counts_what_it_stores_flushes_and_rejects(tmp_path: Path) -> None:
    fake = FakePublisher()
    start = depth()
    counts = Counts()
    with _spooler(tmp_path, fake) as spool:
        fake.down = True
        spool.publish("a.b", {"n": 1}, event_id="evt_1", account=ACCOUNT)  # publisher fails
        spool.publish("gone.type", {"n": 2}, event_id="evt_2", account=ACCOUNT)  # behind it
        spool.publish("a.b", {"n": 3}, event_id="evt_3", account=ACCOUNT)
        spool.publish("a.b", {"n": 3}, event_id="evt_3", account=ACCOUNT)  # a caller retrying
        assert depth() == start + 3
        assert counts.changes() == {
            spooled("unavailable"): 1,
            spooled("behind_spooled"): 2,
            "webhook_producer_spool_depth{}": 3,
        }

        fake.down = False
        fake.unroutable = {"gone.type"}
        counts = Counts()
        assert spool.flush() == 2
        assert depth() == start
        assert counts.changes() == {
            "webhook_producer_spool_flushed_total{}": 2,
            rejected("unroutable"): 1,
            "webhook_producer_spool_depth{}": -3,
        }


def test_spool_counts_nacked_events(tmp_path: Path) -> None:
    fake = FakePublisher()

    def nack(*_a: Any, **_k: Any) -> str:
        raise NackedError("queue full")

    counts = Counts()
    with _spooler(tmp_path, fake) as spool:
        fake.publish = nack  # type: ignore[method-assign]
        spool.publish("a.b", {}, event_id="evt_n", account=ACCOUNT)
        assert counts.changes() == {spooled("nacked"): 1, "webhook_producer_spool_depth{}": 1}


def test_spool_depth_sums_open_spools_and_follows_them_across_restarts(tmp_path: Path) -> None:
    fake = FakePublisher()
    fake.down = True
    start = depth()
    first = _spooler(tmp_path, fake, "first.db")
    second = _spooler(tmp_path, fake, "second.db")
    for n in range(3):
        first.publish("a.b", {"n": n}, account=ACCOUNT)
    second.publish("a.b", {"n": 9}, account=ACCOUNT)
    assert depth() == start + 4
    first.close()  # its events stay on disk, but no longer in this process
    assert depth() == start + 1
    reopened = _spooler(tmp_path, fake, "first.db")  # a restarted producer finds them
    assert depth() == start + 4
    fake.down = False
    assert reopened.flush() == 3
    assert depth() == start + 1
    reopened.close()
    second.close()
    second.close()  # twice is harmless
    assert depth() == start
