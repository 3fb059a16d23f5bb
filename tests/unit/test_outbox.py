"""The shared outbox (broker.outbox) against a scripted broker: batching, bounds, confirms,
refusals, reconnects and the flush on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pika
import pytest

from broker.outbox import DropReason, Outbox, OutboxLimits, OutboxRoute
from config.errors import BrokerUnavailableError, NackedError, UnroutableError
from config.topology import Exchange, Topology

TOPOLOGY = Topology((Exchange("test.outbox", "fanout"),), (), ())


def encode(items: Sequence[int]) -> bytes:
    if -1 in items:
        raise ValueError("a bug in the encoder")
    return orjson.dumps(list(items))


ROUTE: OutboxRoute[int] = OutboxRoute(
    name="test_outbox",
    exchange="test.outbox",
    topology=TOPOLOGY,
    encode=encode,
    properties=pika.BasicProperties(delivery_mode=2),
    size=lambda item: 100,
)


class Meter:
    def __init__(self) -> None:
        self.published_items = 0
        self.drops: dict[str, int] = {}
        self.refusals = 0
        self.gauge = -1

    def published(self, items: int) -> None:
        self.published_items += items

    def dropped(self, reason: DropReason, items: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + items

    def refused(self) -> None:
        self.refusals += 1

    def buffered(self, items: int) -> None:
        self.gauge = items


# What a publish does: None (confirmed), an exception to raise, or "hang" (no confirm).
Outcome = BaseException | str | None


class Broker:
    """Connections and channels that confirm, refuse or fail as the test says."""

    def __init__(self, outcome: Callable[[list[int]], Outcome] = lambda batch: None) -> None:
        self.outcome = outcome
        self.refuse_connects = 0
        self.connects = 0
        self.declared = 0
        self.messages: list[list[int]] = []  # confirmed, in order
        self.attempts: list[list[int]] = []
        self.pending = 0
        self.most_pending = 0
        self.channels: list[Channel] = []

    async def connect(self) -> Connection:
        self.connects += 1
        if self.refuse_connects:
            self.refuse_connects -= 1
            raise BrokerUnavailableError("connection refused")
        return Connection(self)


class Channel:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def enable_confirms(self) -> None:
        pass

    async def declare(self, topology: Topology) -> None:
        assert topology is TOPOLOGY
        self.broker.declared += 1

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        assert exchange == "test.outbox" and properties.delivery_mode == 2
        broker = self.broker
        batch = orjson.loads(body)
        broker.attempts.append(batch)
        if self.closed.done():
            raise BrokerUnavailableError("channel is closed")
        outcome = broker.outcome(batch)
        broker.pending += 1
        broker.most_pending = max(broker.most_pending, broker.pending)
        try:
            await asyncio.sleep(0.001)  # the confirm's round trip
            if outcome == "hang":
                await asyncio.wait({self.closed})
                raise BrokerUnavailableError("channel closed before the confirm")
            if outcome == "lose":  # the connection drops before the confirm
                self.lose()
                raise BrokerUnavailableError("channel closed before the confirm")
            if isinstance(outcome, BaseException):
                raise outcome
            broker.messages.append(batch)
        finally:
            broker.pending -= 1

    def lose(self) -> None:
        if not self.closed.done():
            self.closed.set_result(ConnectionError("lost"))

    async def close(self) -> None:
        self.lose()


class Connection:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def channel(self) -> Channel:
        channel = Channel(self.broker)
        self.broker.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.broker.channels:
            channel.lose()


def outbox(broker: Broker, meter: Meter, **limits: Any) -> Outbox[int]:
    settings = {"linger_seconds": 0.01, "retry_seconds": 0.01, "max_retry_seconds": 0.05}
    settings.update(limits)
    return Outbox(ROUTE, broker.connect, meter, OutboxLimits(**settings))


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.005)


def sent(broker: Broker) -> list[int]:
    return [item for message in broker.messages for item in message]


async def test_items_go_out_in_batches_by_count_in_order() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, batch_items=4)
    for i in range(10):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 10)
    assert broker.messages == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert box.buffered == 0 and meter.gauge == 0
    await box.close(1.0)
    assert meter.drops == {}


async def test_a_partial_batch_waits_for_the_linger_then_goes_as_one_message() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, batch_items=250, linger_seconds=0.1)
    box.start()
    box.put(1)
    await asyncio.sleep(0.02)
    box.put(2)
    box.put(3)
    assert broker.messages == []  # still lingering
    await until(lambda: meter.published_items == 3)
    assert broker.messages == [[1, 2, 3]]
    await box.close(1.0)


async def test_a_batch_is_bounded_by_bytes_too() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, batch_items=250, batch_bytes=250)  # 100 bytes an item
    for i in range(5):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 5)
    assert broker.messages == [[0, 1], [2, 3], [4]]
    await box.close(1.0)


async def test_a_full_buffer_sheds_the_oldest_and_counts_them_never_waiting() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, max_items=100)
    started = time.monotonic()
    for i in range(1000):
        box.put(i)
    assert time.monotonic() - started < 0.5
    assert box.buffered == 100 and meter.gauge == 100
    assert meter.drops == {"buffer_full": 900}
    box.start()
    await until(lambda: meter.published_items == 100)
    assert sent(broker) == list(range(900, 1000))  # the most recent were kept
    await box.close(1.0)


async def test_the_byte_bound_sheds_too_but_keeps_one_item_however_large() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, max_bytes=250)  # 100 bytes an item
    for i in range(5):
        box.put(i)
    assert box.buffered == 2 and meter.drops == {"buffer_full": 3}
    big = outbox(broker, Meter(), max_bytes=50)
    big.put(1)
    assert big.buffered == 1


async def test_a_full_buffer_can_drop_the_newest_instead() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, max_items=3, shed="newest")
    for i in range(10):
        box.put(i)
    assert meter.drops == {"buffer_full": 7}
    box.start()
    await until(lambda: meter.published_items == 3)
    assert sent(broker) == [0, 1, 2]
    await box.close(1.0)


async def test_a_refused_batch_is_kept_and_sent_again_in_order() -> None:
    refusals = [2]

    def refuse_twice(batch: list[int]) -> Outcome:
        if refusals[0]:
            refusals[0] -= 1
            return NackedError("queue full")
        return None

    broker, meter = Broker(refuse_twice), Meter()
    box = outbox(broker, meter, batch_items=3, in_flight=1)  # one at a time: order shows
    for i in range(7):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 7)
    assert sent(broker) == list(range(7))  # given back to the front
    assert broker.attempts[:3] == [[0, 1, 2]] * 3
    assert meter.refusals == 2 and meter.drops == {}
    await box.close(1.0)


async def test_a_refused_item_can_be_dropped_and_counted_instead() -> None:
    broker = Broker(lambda batch: NackedError("queue full") if batch == [1] else None)
    meter = Meter()
    box = outbox(broker, meter, batch_items=1, in_flight=8, refused="drop")
    for i in range(4):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 3)
    assert sorted(sent(broker)) == [0, 2, 3]
    assert meter.drops == {"queue_full": 1} and meter.refusals == 1
    await box.close(1.0)


async def test_a_lost_connection_keeps_the_batches_for_after_the_reconnect() -> None:
    lost = [False]

    def lose_once(batch: list[int]) -> Outcome:
        if not lost[0]:
            lost[0] = True
            return "lose"
        return None

    broker, meter = Broker(lose_once), Meter()
    broker.refuse_connects = 2  # and the first connects fail
    box = outbox(broker, meter, batch_items=2)
    for i in range(6):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 6)
    assert sorted(set(sent(broker))) == list(range(6))
    assert broker.connects >= 4 and broker.declared >= 2  # declared after every connect
    assert meter.drops == {}
    await box.close(1.0)


async def test_an_unroutable_batch_is_kept_and_the_topology_declared_again() -> None:
    first = [True]

    def unroutable_once(batch: list[int]) -> Outcome:
        if first[0]:
            first[0] = False
            return UnroutableError("no queue bound")
        return None

    broker, meter = Broker(unroutable_once), Meter()
    box = outbox(broker, meter, batch_items=10)
    for i in range(3):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 3)
    assert sent(broker) == [0, 1, 2] and broker.declared == 2 and meter.refusals == 1
    await box.close(1.0)


async def test_a_batch_that_cannot_be_encoded_is_dropped_as_an_error_not_retried() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, batch_items=2)
    for i in (0, 1, -1, 3, 4):
        box.put(i)
    box.start()
    await until(lambda: meter.published_items == 3)
    assert sent(broker) == [0, 1, 4]
    assert meter.drops == {"error": 2}
    await box.close(1.0)


async def test_batches_in_flight_are_bounded_and_never_hold_up_put() -> None:
    broker, meter = Broker(lambda batch: "hang"), Meter()
    box = outbox(broker, meter, batch_items=1, in_flight=3)
    box.start()
    for i in range(50):
        box.put(i)
    await until(lambda: broker.pending == 3)
    await asyncio.sleep(0.05)
    assert broker.most_pending == 3 and box.buffered == 50
    started = time.monotonic()
    await box.close(0.2)
    assert time.monotonic() - started < 1.0
    assert meter.drops == {"shutdown": 50} and box.buffered == 0 and meter.gauge == 0


async def test_close_flushes_without_waiting_for_the_linger() -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter, linger_seconds=30.0)
    box.start()
    for i in range(5):
        box.put(i)
    started = time.monotonic()
    await box.close(5.0)
    assert time.monotonic() - started < 1.0
    assert sent(broker) == [0, 1, 2, 3, 4] and meter.drops == {}


async def test_without_a_broker_close_keeps_its_deadline_and_counts_what_is_left() -> None:
    broker, meter = Broker(), Meter()
    broker.refuse_connects = 10_000
    box = outbox(broker, meter)
    box.start()
    for i in range(20):
        box.put(i)
    started = time.monotonic()
    await box.close(0.3)
    assert 0.25 < time.monotonic() - started < 1.5
    assert meter.drops == {"shutdown": 20}
    box.put(99)  # too late: counted, not kept
    assert meter.drops == {"shutdown": 21} and box.buffered == 0


@pytest.mark.parametrize("started", [True, False])
async def test_close_is_safe_whether_or_not_started(started: bool) -> None:
    broker, meter = Broker(), Meter()
    box = outbox(broker, meter)
    if started:
        box.start()
    await box.close(0.1)
    assert meter.drops == {} and box.buffered == 0
