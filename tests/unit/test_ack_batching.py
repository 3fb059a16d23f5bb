"""Ack batching in broker.async_connection: a multiple ack never settles an un-acked one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pika
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.async_channel import AmqpChannel, Message


class FakeChannel:
    """Just enough of pika's Channel; records the settle frames in order."""

    is_open = True

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.deliver: Any = None

    def add_on_close_callback(self, _cb: Any) -> None: ...
    def add_on_cancel_callback(self, _cb: Any) -> None: ...

    def basic_qos(self, prefetch_count: int, callback: Any) -> None:
        callback(None)

    def basic_consume(self, queue: str, deliver: Any, auto_ack: bool, callback: Any) -> str:
        self.deliver = deliver
        callback(None)
        return "ctag"

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", delivery_tag, multiple))

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self.frames.append(("nack", delivery_tag, False))


def broker_outcome(frames: list[tuple[str, int, bool]], delivered: int) -> dict[int, str]:
    """Apply the frames the way RabbitMQ does; an unknown tag is a channel error."""
    unsettled = set(range(1, delivered + 1))
    outcome: dict[int, str] = {}
    for kind, tag, multiple in frames:
        assert tag in unsettled, f"{kind} of tag {tag}, which is not unsettled: channel error"
        tags = [t for t in unsettled if t <= tag] if multiple else [tag]
        for t in tags:
            outcome[t] = kind
            unsettled.discard(t)
    return outcome


async def _channel() -> tuple[AmqpChannel, FakeChannel, list[Message]]:
    fake = FakeChannel()
    channel = AmqpChannel(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    received: list[Message] = []
    await channel.consume("q", received.append, prefetch=10)
    return channel, fake, received


def _deliver(fake: FakeChannel, tag: int) -> None:
    method = SimpleNamespace(delivery_tag=tag, redelivered=False, exchange="x", routing_key="r")
    fake.deliver(None, method, pika.BasicProperties(), b"{}")


async def test_a_run_of_acks_from_the_oldest_becomes_one_multiple_ack() -> None:
    _, fake, received = await _channel()
    for tag in range(1, 7):
        _deliver(fake, tag)
    for message in (received[2], received[0], received[1], received[4]):
        message.ack()
    await asyncio.sleep(0)
    # 1-3 form a run from the oldest: one frame. 5 waits behind 4 (in progress).
    assert fake.frames == [("ack", 3, True), ("ack", 5, False)]
    received[3].reject(requeue=True)
    received[5].ack()
    await asyncio.sleep(0)
    assert fake.frames[2:] == [("nack", 4, False), ("ack", 6, False)]
    assert broker_outcome(fake.frames, 6) == {
        1: "ack",
        2: "ack",
        3: "ack",
        4: "nack",
        5: "ack",
        6: "ack",
    }


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 40),
    data=st.data(),
)
def test_every_message_is_settled_once_exactly_as_the_worker_said(
    count: int, data: st.DataObject
) -> None:
    """Random arrival, random settle order, random loop turns: the broker's view matches."""

    async def scenario() -> None:
        _c, fake, received = await _channel()
        order = data.draw(st.permutations(range(count)))
        wanted = data.draw(
            st.lists(st.sampled_from(["ack", "nack"]), min_size=count, max_size=count)
        )
        delivered = 0
        for index in order:
            # Deliveries keep arriving while earlier ones are settled.
            while delivered <= index or (delivered < count and data.draw(st.booleans())):
                delivered += 1
                _deliver(fake, delivered)
            message = received[index]
            if wanted[index] == "ack":
                message.ack()
            else:
                message.reject(requeue=True)
            if data.draw(st.booleans()):
                await asyncio.sleep(0)  # end of a loop turn: acks flushed
        await asyncio.sleep(0)
        assert broker_outcome(fake.frames, count) == {i + 1: wanted[i] for i in range(count)}

    asyncio.run(scenario())
