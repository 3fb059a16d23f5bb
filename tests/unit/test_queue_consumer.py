"""broker.queue_consumer: settle only what the handler decided, reconnect, stop gracefully.

A fake connection and channel (tests/support/fake_amqp.py) stand in for
RabbitMQ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from broker.consumers import Message
from broker.queue_consumer import QueueConsumer, Settlement
from broker.reconnect_backoff import Backoff
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError
from config.topology import DELIVERY_LOG_QUEUE, delivery_log_topology
from tests.support.fake_amqp import Broker, FakeChannel

TOPOLOGY = delivery_log_topology()
FAST = Backoff(first_seconds=0.01, most_seconds=0.02)


def consumer(
    broker: Broker,
    handle: Callable[[Message], Awaitable[Settlement]],
    *,
    ready: list[bool] | None = None,
    drain_seconds: float = 5.0,
) -> QueueConsumer:
    return QueueConsumer(
        BrokerUrl.parse("amqp://127.0.0.1:1/%2F"),
        process="test-consumer",
        topology=TOPOLOGY,
        queue=DELIVERY_LOG_QUEUE,
        prefetch=7,
        handle=handle,
        on_ready=None if ready is None else ready.append,
        drain_seconds=drain_seconds,
        backoff=FAST,
        connect=broker.connect,
    )


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_a_message_is_settled_only_once_its_handler_decided() -> None:
    channel = FakeChannel()
    decisions: dict[bytes, asyncio.Future[Settlement]] = {}

    async def handle(message: Message) -> Settlement:
        decisions[message.body] = asyncio.get_running_loop().create_future()
        return await decisions[message.body]

    broker = Broker(channel)
    loop = consumer(broker, handle)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming")
    assert channel.declared == [TOPOLOGY] and channel.consumed == [(DELIVERY_LOG_QUEUE, 7)]
    [name] = broker.names  # the connection's name, as the management UI shows it
    assert name.startswith("test-consumer ") and " pid " in name
    for body in (b"a", b"b", b"c"):
        channel.deliver(body)
    await until(lambda: len(decisions) == 3, "three handlers")
    await asyncio.sleep(0.02)
    assert channel.settled == [] and loop.in_flight == 3  # nothing certain yet
    decisions[b"b"].set_result(Settlement.DEAD_LETTER)
    decisions[b"c"].set_result(Settlement.REQUEUE)
    await until(lambda: len(channel.settled) == 2, "two settled")
    assert channel.settled == [(2, "reject"), (3, "requeue")]
    decisions[b"a"].set_result(Settlement.ACK)
    await until(lambda: len(channel.settled) == 3, "the ack")
    assert channel.settled[-1] == (1, "ack") and loop.in_flight == 0
    loop.request_stop()
    await asyncio.wait_for(task, 5)


async def test_a_handler_that_raises_dead_letters_its_message_and_the_loop_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    channel = FakeChannel()

    async def handle(message: Message) -> Settlement:
        if message.body == b"boom":
            raise KeyError("something nobody foresaw")
        return Settlement.ACK

    loop = consumer(Broker(channel), handle)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming")
    channel.deliver(b"boom")
    channel.deliver(b"fine")
    await until(lambda: len(channel.settled) == 2, "both settled")
    assert sorted(channel.settled) == [(1, "reject"), (2, "ack")]
    assert "message_handler_failed" in capsys.readouterr().out
    loop.request_stop()
    await asyncio.wait_for(task, 5)


async def test_reconnects_with_backoff_and_declares_the_topology_each_time() -> None:
    first, second = FakeChannel(), FakeChannel()
    broker = Broker(
        BrokerUnavailableError("refused"),
        BrokerUnavailableError("refused"),
        first,
        second,
    )
    held: list[Message] = []
    ready: list[bool] = []

    async def handle(message: Message) -> Settlement:
        held.append(message)
        await asyncio.Event().wait()  # never decides
        raise AssertionError("unreachable")

    loop = consumer(broker, handle, ready=ready)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming after two refusals")
    assert broker.attempts == 3 and first.declared == [TOPOLOGY]
    first.deliver(b"in flight")
    await until(lambda: len(held) == 1, "handler started")

    first.lose()
    await until(lambda: second.consumed != [], "consuming again")
    # The handler under way was cancelled: its message is left to the broker,
    # which hands it out again now that the channel is closed.
    assert first.settled == [] and loop.in_flight == 0
    assert second.declared == [TOPOLOGY]  # declared again after the reconnect
    assert broker.connections[0].closed.done()
    assert ready == [True, False, True]
    loop.request_stop()
    await asyncio.wait_for(task, 5)
    assert ready == [True, False, True, False]


async def test_a_refused_declaration_closes_the_connection_and_is_retried() -> None:
    good = FakeChannel()
    broker = Broker(FakeChannel(refuse_declare=True), good)

    async def handle(_message: Message) -> Settlement:
        return Settlement.ACK

    loop = consumer(broker, handle)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming on the second connection")
    assert broker.connections[0].closed.done() and good.declared == [TOPOLOGY]
    loop.request_stop()
    await asyncio.wait_for(task, 5)


async def test_a_consumer_cancelled_by_the_broker_reconnects() -> None:
    first, second = FakeChannel(), FakeChannel()

    async def handle(_message: Message) -> Settlement:
        return Settlement.ACK

    loop = consumer(Broker(first, second), handle)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming")
    first.cancelled_by_broker.set_result("ctag-1")  # its queue was deleted
    await until(lambda: second.declared == [TOPOLOGY], "declared again")
    loop.request_stop()
    await asyncio.wait_for(task, 5)


async def test_a_stop_cancels_the_consumer_and_drains_what_is_under_way() -> None:
    channel = FakeChannel()
    release = asyncio.Event()
    ready: list[bool] = []

    async def handle(_message: Message) -> Settlement:
        await release.wait()
        return Settlement.ACK

    loop = consumer(Broker(channel), handle, ready=ready)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming")
    channel.deliver()
    channel.deliver()
    await asyncio.sleep(0.02)
    loop.request_stop()
    await until(lambda: channel.cancelled == ["ctag-1"], "consumer cancelled")
    assert ready == [True, False] and not task.done()  # waiting for the two handlers
    release.set()
    await asyncio.wait_for(task, 5)
    assert channel.settled == [(1, "ack"), (2, "ack")]
    assert channel.flushes == 1  # acks sent before the connection closed
    assert channel.closed.done()


async def test_the_drain_has_a_deadline_after_which_messages_go_back_unsettled() -> None:
    channel = FakeChannel()
    cancelled = asyncio.Event()

    async def handle(_message: Message) -> Settlement:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    loop = consumer(Broker(channel), handle, drain_seconds=0.2)
    task = asyncio.create_task(loop.run())
    await until(lambda: loop.ready, "consuming")
    channel.deliver()
    await asyncio.sleep(0.02)
    started = time.monotonic()
    loop.request_stop()
    await asyncio.wait_for(task, 5)
    assert 0.15 <= time.monotonic() - started < 3
    assert cancelled.is_set() and channel.settled == [] and channel.closed.done()


async def test_a_stop_while_the_broker_is_unreachable_returns_promptly() -> None:
    broker = Broker(*[BrokerUnavailableError("down")] * 1000)

    async def handle(_message: Message) -> Settlement:
        return Settlement.ACK

    loop = QueueConsumer(
        BrokerUrl.parse("amqp://127.0.0.1:1/%2F"),
        process="test-consumer",
        topology=TOPOLOGY,
        queue=DELIVERY_LOG_QUEUE,
        prefetch=1,
        handle=handle,
        backoff=Backoff(first_seconds=5, most_seconds=5),
        connect=broker.connect,
    )
    task = asyncio.create_task(loop.run())
    await until(lambda: broker.attempts >= 1, "a first attempt")
    started = time.monotonic()
    loop.request_stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1 and broker.attempts == 1 and not loop.ready
