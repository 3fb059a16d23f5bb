"""Starting many consumers pipelined: AmqpChannel.consume_many and Lanes.start_consuming."""

from __future__ import annotations

import asyncio
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
    """An AmqpChannel for Lanes: counts consume_many calls; refuses queues in ``missing``."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[tuple[str, int]]] = []
        self.missing = missing

    async def consume_many(self, requests: list[ConsumeRequest]) -> list[str]:
        self.calls.append([(queue, prefetch) for queue, _, prefetch in requests])
        for queue, _, _ in requests:
            if queue in self.missing:
                raise BrokerUnavailableError(f"connection closed: no queue {queue!r}")
        return [f"tag-{queue}" for queue, _, _ in requests]


async def test_lanes_start_a_window_at_a_time_and_skip_lanes_that_must_not_consume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "_CONSUME_WINDOW", 40)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10)
    policy = CircuitBreakerPolicy()
    for i in range(100):
        subscriber = _subscriber(i, max_in_flight=3 if i % 7 == 0 else 16)
        lanes.add(subscriber, policy, DISABLED if i % 10 == 9 else ENABLED)
    lanes["s5"].set_paused(True, "pause marker present")
    consumer = FakeConsumer()
    handled: list[tuple[Lane, Message]] = []
    await lanes.start_consuming(consumer, lambda lane, m: handled.append((lane, m)))  # type: ignore[arg-type]

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
            assert lane.tag == f"tag-{work_queue(lane.subscriber.id)}"
            assert lane.prefetch == lane.wanted_prefetch()
        else:
            assert lane.tag is None and lane.prefetch == 0


async def test_a_refused_window_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes_module, "_CONSUME_WINDOW", 10)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10)
    for i in range(30):
        lanes.add(_subscriber(i), CircuitBreakerPolicy(), ENABLED)
    consumer = FakeConsumer(missing=frozenset({work_queue("s14")}))
    with pytest.raises(BrokerUnavailableError, match="s14"):
        await lanes.start_consuming(consumer, lambda _lane, _m: None)  # type: ignore[arg-type]
    # The first window's consumers stand; the service forgets them with the channel.
    assert len(consumer.calls) == 2 and lanes.consuming == 10
    lanes.forget_consumers()
    assert lanes.consuming == 0
