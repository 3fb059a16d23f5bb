"""Starting many consumers pipelined: AmqpChannel.consume_many and Lanes.start_consuming."""

from __future__ import annotations

import asyncio
import zlib
from types import SimpleNamespace
from typing import Any

import pika
import pika.exceptions
import pika.spec
import pytest

from broker.async_channel import AmqpChannel, ConsumeRequest, Message
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError
from config.subscribers import CircuitBreakerPolicy, Subscriber
from config.topology import work_queue
from worker import lanes as lanes_module
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.consumer_channels import ConsumerChannels, channel_index
from worker.lane import Lane
from worker.lanes import Lanes
from worker.subscriber_source import DISABLED, ENABLED


class FakeChannel:
    """The parts of pika's Channel that consuming uses; records the methods sent, in order.

    Like the broker, it handles methods in order: a ``basic.consume`` of a queue
    in ``missing`` closes the channel (404), and nothing after it is answered.
    """

    is_open = True

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.sent: list[tuple[str, Any, bool]] = []  # (method, argument, waits for a reply)
        self.missing = missing
        self._consumers: dict[str, Any] = {}
        self._count = 0
        self._on_close: Any = None
        self.closed = False

    def add_on_close_callback(self, callback: Any) -> None:
        self._on_close = callback

    def add_on_cancel_callback(self, _cb: Any) -> None: ...

    def _generate_consumer_tag(self) -> str:
        self._count += 1
        return f"ctag{self._count}"

    def _handle(self, queue: str) -> bool:
        if queue in self.missing and not self.closed:
            self.closed = True
            reason = pika.exceptions.ChannelClosedByBroker(404, f"NOT_FOUND - no queue '{queue}'")
            asyncio.get_running_loop().call_soon(self._on_close, self, reason)
        return not self.closed

    def _rpc(self, method: Any, callback: Any = None, acceptable_replies: Any = None) -> None:
        assert isinstance(method, pika.spec.Basic.Consume) and method.nowait
        assert callback is None and not acceptable_replies
        self.sent.append(("consume", method.queue, False))
        self._handle(method.queue)

    def basic_qos(self, prefetch_count: int, callback: Any) -> None:
        self.sent.append(("qos", prefetch_count, True))
        if not self.closed:
            asyncio.get_running_loop().call_soon(callback, None)

    def basic_consume(self, queue: str, deliver: Any, auto_ack: bool, callback: Any) -> str:
        tag = self._generate_consumer_tag()
        self._consumers[tag] = deliver
        self.sent.append(("consume", queue, True))
        if self._handle(queue):
            asyncio.get_running_loop().call_soon(callback, None)
        return tag

    def deliver(self, tag: str, delivery_tag: int) -> None:
        method = SimpleNamespace(delivery_tag=delivery_tag, redelivered=False, exchange="x")
        method.routing_key = "r"
        self._consumers[tag](self, method, pika.BasicProperties(), b"{}")


def _requests(prefetches: list[int], received: dict[str, list[Message]]) -> list[ConsumeRequest]:
    requests: list[ConsumeRequest] = []
    for i, prefetch in enumerate(prefetches):
        queue = f"q{i}"
        received[queue] = []
        requests.append((queue, received[queue].append, prefetch))
    return requests


async def test_one_round_trip_per_run_of_the_same_prefetch() -> None:
    fake = FakeChannel()
    channel = AmqpChannel(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    received: dict[str, list[Message]] = {}
    tags = await channel.consume_many(_requests([10, 10, 10, 3, 3, 10], received))
    # Only the qos and the last consume of each run wait for the broker's reply.
    assert fake.sent == [
        ("qos", 10, True),
        ("consume", "q0", False),
        ("consume", "q1", False),
        ("consume", "q2", True),
        ("qos", 3, True),
        ("consume", "q3", False),
        ("consume", "q4", True),
        ("qos", 10, True),
        ("consume", "q5", True),
    ]
    assert len(set(tags)) == 6
    # Each tag delivers to its own queue's callback, settled on this channel.
    for i, tag in enumerate(tags):
        fake.deliver(tag, i + 1)
    for i in range(6):
        [message] = received[f"q{i}"]
        assert message.delivery_tag == i + 1 and message.channel is channel
    # The prefetch in force is remembered: the next consume needs no qos.
    await channel.consume("q6", lambda _m: None, prefetch=10)
    assert fake.sent[-1] == ("consume", "q6", True)


async def test_each_channel_has_its_own_prefetch_in_force() -> None:
    """basic.qos is per channel (and, without global, per consumer made after it): a
    prefetch set on one channel says nothing about another's."""
    loop = asyncio.get_running_loop()
    fakes = FakeChannel(), FakeChannel()
    first, second = (AmqpChannel(fake, loop) for fake in fakes)  # type: ignore[arg-type]
    received: dict[str, list[Message]] = {}
    tags = await asyncio.gather(
        first.consume_many(_requests([10, 10], received)),
        second.consume_many(_requests([10, 3], received)),
    )
    assert fakes[0].sent == [("qos", 10, True), ("consume", "q0", False), ("consume", "q1", True)]
    assert fakes[1].sent == [
        ("qos", 10, True),
        ("consume", "q0", True),
        ("qos", 3, True),
        ("consume", "q1", True),
    ]
    # The prefetch in force differs per channel: 3 needs a qos on the first only.
    await first.consume("a", lambda _m: None, prefetch=3)
    await second.consume("b", lambda _m: None, prefetch=3)
    assert fakes[0].sent[-2:] == [("qos", 3, True), ("consume", "a", True)]
    assert fakes[1].sent[-1] == ("consume", "b", True)
    # A delivery is settled on the channel that delivered it.
    fakes[1].deliver(tags[1][0], 7)
    [message] = received["q0"]
    assert message.channel is second and message.delivery_tag == 7


async def test_a_refused_consume_in_a_pipeline_raises_and_names_the_queue() -> None:
    fake = FakeChannel(missing=frozenset({"q1"}))
    channel = AmqpChannel(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailableError, match="no queue 'q1'"):
        await channel.consume_many(_requests([10, 10, 10], {}))
    assert channel.closed.done()


def _subscriber(index: int, **extra: Any) -> Subscriber:
    return Subscriber.model_validate(
        {
            "id": f"s{index}",
            "account": "acme",
            "url": f"http://127.0.0.1:9/{index}",
            "secret": "whsec-test-secret-0123456789",
            "events": ("order.*",),
            **extra,
        }
    )


class FakeConsumer:
    """An AmqpChannel for Lanes: records consume_many, consume and cancel calls; refuses
    queues in ``missing`` (the broker then closes the channel)."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        loop = asyncio.get_running_loop()
        self.calls: list[list[tuple[str, int]]] = []
        self.single: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self.missing = missing
        self.flushed = 0
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.cancelled_by_broker: asyncio.Future[str] = loop.create_future()
        # How many consume_many calls are awaiting on every FakeConsumer at once.
        self.active: list[int] = [0]
        self.most_active: list[int] = [0]
        self._count = 0

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    async def consume_many(self, requests: list[ConsumeRequest]) -> list[str]:
        self.calls.append([(queue, prefetch) for queue, _, prefetch in requests])
        self.active[0] += 1
        self.most_active[0] = max(self.most_active[0], self.active[0])
        try:
            await asyncio.sleep(0.001)  # the broker's round trip
        finally:
            self.active[0] -= 1
        for queue, _, _ in requests:
            if queue in self.missing:
                self.closed.set_result(RuntimeError(f"no queue {queue!r}"))
                raise BrokerUnavailableError(f"connection closed: no queue {queue!r}")
        return [self._tag(queue) for queue, _, _ in requests]

    async def consume(self, queue: str, _on_message: Any, *, prefetch: int) -> str:
        self.single.append((queue, prefetch))
        return self._tag(queue)

    async def cancel(self, tag: str) -> None:
        self.cancelled.append(tag)

    def flush_acks(self) -> None:
        self.flushed += 1

    def _tag(self, queue: str) -> str:
        self._count += 1
        return f"{id(self)}:{queue}:{self._count}"


def _fakes(count: int, missing: frozenset[str] = frozenset()) -> list[FakeConsumer]:
    fakes = [FakeConsumer(missing) for _ in range(count)]
    for fake in fakes[1:]:  # one concurrency count across them
        fake.active, fake.most_active = fakes[0].active, fakes[0].most_active
    return fakes


def _channels(fakes: list[FakeConsumer]) -> ConsumerChannels:
    return ConsumerChannels(fakes)  # type: ignore[arg-type]


def _on(fakes: list[FakeConsumer], lane: Lane) -> FakeConsumer:
    """The fake channel ``lane`` must consume on."""
    return fakes[channel_index(lane.subscriber.id, len(fakes))]


def _ignore(_lane: Lane, _message: Message) -> None: ...


async def test_lanes_start_a_window_at_a_time_and_skip_lanes_that_must_not_consume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "_CONSUME_WINDOW", 40)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10, consumer_channels=1)
    policy = CircuitBreakerPolicy()
    for i in range(100):
        subscriber = _subscriber(i, max_in_flight=3 if i % 7 == 0 else 16)
        lanes.add(subscriber, policy, DISABLED if i % 10 == 9 else ENABLED)
    lanes["s5"].set_paused(True, "pause marker present")
    [consumer] = fakes = _fakes(1)
    handled: list[tuple[Lane, Message]] = []
    await lanes.start_consuming(_channels(fakes), lambda lane, m: handled.append((lane, m)))

    assert [len(call) for call in consumer.calls] == [35, 36, 18]  # 3 windows
    for call in consumer.calls:
        prefetches = [prefetch for _, prefetch in call]
        assert prefetches == sorted(prefetches)  # one qos per distinct prefetch
    started = {queue for call in consumer.calls for queue, _ in call}
    wanted = {work_queue(lane.subscriber.id) for lane in lanes if lane.wanted_prefetch()}
    assert started == wanted and len(started) == 89
    assert lanes.consuming == 89
    for lane in lanes:
        if lane.wanted_prefetch():
            assert lane.tag is not None and f":{work_queue(lane.subscriber.id)}:" in lane.tag
            assert lane.prefetch == lane.wanted_prefetch()
        else:
            assert lane.tag is None and lane.prefetch == 0


async def test_lanes_are_spread_over_the_channels_each_started_side_by_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "_CONSUME_WINDOW", 10)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10, consumer_channels=4)
    for i in range(100):
        lanes.add(
            _subscriber(i, max_in_flight=3 if i % 3 == 0 else 16), CircuitBreakerPolicy(), ENABLED
        )
    fakes = _fakes(4)
    await lanes.start_consuming(_channels(fakes), _ignore)

    assert lanes.consuming == 100
    for lane in lanes:
        # Each lane's consumer was made on the channel its id picks, and only there.
        on = _on(fakes, lane)
        queue = work_queue(lane.subscriber.id)
        assert [q for call in on.calls for q, _ in call].count(queue) == 1
        assert lane.tag is not None and lane.tag.startswith(f"{id(on)}:{queue}:")
        assert lane.prefetch == lane.wanted_prefetch()
    for fake in fakes:
        assert fake.calls, "every channel has lanes"
        for call in fake.calls:  # per channel: sorted, so one qos per prefetch
            prefetches = [prefetch for _, prefetch in call]
            assert prefetches == sorted(prefetches)
    assert sum(len(call) for fake in fakes for call in fake.calls) == 100
    assert fakes[0].most_active[0] > 1, "the channels were started one after another"


async def test_a_lane_keeps_its_channel_through_changes_removal_and_stop() -> None:
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10, consumer_channels=4)
    policy = CircuitBreakerPolicy(failure_threshold=1)
    for i in range(12):
        lanes.add(_subscriber(i, max_in_flight=5), policy, ENABLED)
    fakes = _fakes(4)
    await lanes.start_consuming(_channels(fakes), _ignore)

    # The circuit opens: the consumer is cancelled on the lane's channel; the probe
    # (prefetch 1) and then the full consumer again are made there too.
    lane = lanes["s3"]
    now = [0.0]
    lane.breaker = CircuitBreaker(policy, clock=lambda: now[0])
    on = _on(fakes, lane)
    first = lane.tag
    assert first is not None
    lane.breaker.record(lane.breaker.ticket(), ok=False)
    await lanes.sync(lane)
    assert on.cancelled == [first] and lane.tag is None
    now[0] += 3600.0
    assert lane.breaker.start_probe() is CircuitState.HALF_OPEN
    await lanes.sync(lane)
    assert on.single == [(work_queue("s3"), 1)] and lane.prefetch == 1
    lane.breaker.record(lane.breaker.ticket(), ok=True)
    await lanes.sync(lane)
    assert on.single[-1] == (work_queue("s3"), 5) and lane.prefetch == 5
    others = [fake for fake in fakes if fake is not on]
    assert all(not fake.single and not fake.cancelled for fake in others)

    # Paused, resumed: the same channel.
    lane.set_paused(True, "test")
    await lanes.sync(lane)
    lane.set_paused(False, "test")
    await lanes.sync(lane)
    assert len(on.cancelled) == 3 and on.single[-1] == (work_queue("s3"), 5)
    assert all(not fake.single and not fake.cancelled for fake in others)

    # Removed: cancelled on its channel.
    removed = lanes["s7"]
    tag = removed.tag
    await lanes.remove("s7")
    assert tag in _on(fakes, removed).cancelled

    # Stopped: every consumer cancelled on its own channel, nothing started after.
    tags = {lane.subscriber.id: lane.tag for lane in lanes}
    await lanes.stop_consuming(_channels(fakes))
    for lane in lanes:
        assert tags[lane.subscriber.id] in _on(fakes, lane).cancelled and lane.tag is None
    assert lanes.consuming == 0
    lane.breaker.record(lane.breaker.ticket(), ok=True)
    await lanes.sync(lane)
    assert lane.tag is None


async def test_a_refused_window_fails_the_start_and_stops_the_other_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "_CONSUME_WINDOW", 5)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10, consumer_channels=2)
    for i in range(60):
        lanes.add(_subscriber(i), CircuitBreakerPolicy(), ENABLED)
    # The first lane of channel 0 is refused: its first window fails.
    refused = next(lane for lane in lanes if channel_index(lane.subscriber.id, 2) == 0)
    fakes = _fakes(2, missing=frozenset({work_queue(refused.subscriber.id)}))
    channels = _channels(fakes)
    with pytest.raises(BrokerUnavailableError, match=refused.subscriber.id):
        await lanes.start_consuming(channels, _ignore)
    # Channel 0 started nothing; channel 1 finished the window it was in and no more.
    assert len(fakes[0].calls) == 1 and len(fakes[1].calls) == 1
    assert lanes.consuming == 5
    assert channels.closed.done() and channels.closed_index == 0
    lanes.forget_consumers()
    assert lanes.consuming == 0


async def test_the_channels_report_the_first_close_and_broker_cancel_and_flush_every_ack() -> None:
    fakes = _fakes(3)
    channels = _channels(fakes)
    assert len(channels) == 3 and list(channels) == fakes
    assert channels.of("shop") is fakes[channel_index("shop", 3)]
    channels.flush_acks()
    assert [fake.flushed for fake in fakes] == [1, 1, 1]
    fakes[2].cancelled_by_broker.set_result("ctag-9")
    fakes[1].closed.set_result(RuntimeError("406 PRECONDITION_FAILED"))
    fakes[0].closed.set_result(RuntimeError("later"))
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert channels.cancelled_by_broker.result() == "ctag-9"
    assert "PRECONDITION_FAILED" in str(channels.closed.result()) and channels.closed_index == 1
    with pytest.raises(ValueError, match="3 channels for 2"):
        await Lanes(
            BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10, consumer_channels=2
        ).start_consuming(channels, _ignore)


def test_a_subscriber_picks_the_same_channel_in_every_process_and_ids_spread() -> None:
    # crc32, not hash(): Python salts str hashes per process (PYTHONHASHSEED).
    assert [channel_index(name, 8) for name in ("shop", "s0", "679d3f8a2e1b4c5d6e7f8a9b")] == [
        2,
        zlib.crc32(b"s0") % 8,
        zlib.crc32(b"679d3f8a2e1b4c5d6e7f8a9b") % 8,
    ]
    counts = [0] * 8
    for n in range(10_000):
        counts[channel_index(f"ep_{n:x}{n * 7919:08x}", 8)] += 1
    assert min(counts) > 1_000 and max(counts) < 1_500
