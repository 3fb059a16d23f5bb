"""control.notifications.service on the shared consume loop: a fact is acked once its
notice was sent, and facts of windows still open at a stop go back to the queue.

A fake broker (tests/support/fake_amqp.py) and a fake sender stand in for
RabbitMQ and the notification URL; tests/integration/test_operational_notices.py
runs the same notifier against real ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from pydantic import SecretStr

from broker.url import BrokerUrl
from config.topology import OPERATIONAL_FACTS_QUEUE, operational_facts_topology
from control.notifications.aggregator import Aggregator
from control.notifications.destinations import Destination, Destinations
from control.notifications.sender import RetryPlan
from control.notifications.service import Notifier
from tests.support.fake_amqp import Broker, FakeChannel
from wire.operational_fact import OperationalFact, encode_fact


class FakeSender:
    """Records each notice; ``release`` lets the sends under way finish."""

    plan = RetryPlan(attempts=1)

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.closed = False

    async def send(
        self, destination: Destination, body: bytes, event: str, notice: str, **about: str | None
    ) -> bool:
        await self.release.wait()
        self.sent.append({"event": event, "destination": destination.kind, **about})
        return True

    async def close(self) -> None:
        self.closed = True


def fact(endpoint: str) -> bytes:
    return encode_fact(
        OperationalFact("dead_lettered", "acme", endpoint, time.time(), "evt_1", "exhausted")
    )


@asynccontextmanager
async def running(
    sender: FakeSender, channel: FakeChannel, *, batch_seconds: float
) -> AsyncIterator[Notifier]:
    operator = Destination("operator", "https://ops.example/notices", SecretStr("s" * 20))
    notifier = Notifier(
        BrokerUrl.parse("amqp://127.0.0.1:1/%2F"),
        Destinations(operator, None),
        cast(Any, sender),
        Aggregator(window_seconds=60, batch_seconds=batch_seconds),
        grace_seconds=3,
        connect=Broker(channel).connect,
    )
    task = asyncio.create_task(notifier.run())
    try:
        await until(notifier.is_ready, "consuming")
        assert channel.declared == [operational_facts_topology()]
        assert channel.consumed[0][0] == OPERATIONAL_FACTS_QUEUE
        yield notifier
    finally:
        notifier.request_stop()
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_facts_are_acked_once_their_one_notice_was_sent() -> None:
    sender, channel = FakeSender(), FakeChannel()
    sender.release.clear()
    async with running(sender, channel, batch_seconds=0.05):
        for _ in range(3):
            channel.deliver(fact("shop"))
        await asyncio.sleep(0.2)  # the window is due and its notice under way
        assert channel.settled == [] and sender.sent == []
        sender.release.set()
        await until(lambda: len(channel.settled) == 3, "three acks")
        assert {tag for tag, how in channel.settled if how == "ack"} == {1, 2, 3}
        [notice] = sender.sent  # one notice for the three facts
        assert notice["endpoint"] == "shop" and notice["destination"] == "operator"


async def test_an_unreadable_fact_is_acked_once_and_sends_nothing() -> None:
    sender, channel = FakeSender(), FakeChannel()
    async with running(sender, channel, batch_seconds=0.05):
        channel.deliver(b"\xff not a fact")
        await until(lambda: bool(channel.settled), "settled")
        await asyncio.sleep(0.1)
        assert channel.settled == [(1, "ack")] and sender.sent == []


async def test_a_stop_finishes_notices_under_way_and_gives_open_windows_back() -> None:
    sender, channel = FakeSender(), FakeChannel()
    sender.release.clear()
    async with running(sender, channel, batch_seconds=0.05) as notifier:
        channel.deliver(fact("shop"))  # its window is sent (and held up) ...
        await asyncio.sleep(0.2)
        for _ in range(2):
            channel.deliver(fact("shop"))  # ... these wait for the next window
        await asyncio.sleep(0.05)
        started = time.monotonic()
        notifier.request_stop()
        await until(lambda: not notifier.is_ready(), "stopping")
        sender.release.set()
        await until(lambda: channel.closed.done(), "closed")
        assert time.monotonic() - started < 2
    # The notice under way was sent and its fact acked; the two in the open window
    # were left unsettled, so the broker hands them to the next notifier.
    assert channel.settled == [(1, "ack")] and len(sender.sent) == 1
    assert sender.closed
