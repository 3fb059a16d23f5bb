"""A fake AMQP connection and channel for broker.queue_consumer.QueueConsumer (no broker).

They record what the loop declares, consumes, cancels and settles, and let a
test deliver messages and close the channel as the broker would.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from broker.consumers import Message, OnMessage
from broker.properties import MessageProperties
from broker.queue_consumer import ConsumerConnection
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, TopologyError
from config.topology import Topology


class FakeChannel:
    """Records declarations, consumers and settlements; ``lose()`` closes it like the broker."""

    def __init__(self, *, refuse_declare: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.cancelled_by_broker: asyncio.Future[str] = loop.create_future()
        self.declared: list[Topology] = []
        self.consumed: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self.settled: list[tuple[int, str]] = []
        self.flushes = 0
        self.on_message: OnMessage | None = None
        self._refuse_declare = refuse_declare
        self._next_tag = 0

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    async def declare(self, topology: Topology) -> None:
        if self._refuse_declare:
            raise TopologyError("queue declared with other arguments")
        self.declared.append(topology)

    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> str:
        self.consumed.append((queue, prefetch))
        self.on_message = on_message
        return "ctag-1"

    async def cancel(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def flush_acks(self) -> None:
        self.flushes += 1

    def settle(self, delivery_tag: int, *, ack: bool, requeue: bool = True) -> bool:
        if not self.is_open:
            return False
        self.settled.append((delivery_tag, "ack" if ack else "requeue" if requeue else "reject"))
        return True

    def deliver(self, body: bytes = b"{}") -> Message:
        """Hand the consumer one message, as pika's delivery callback would."""
        assert self.on_message is not None, "not consuming"
        self._next_tag += 1
        message = Message(
            channel=cast(Any, self),
            delivery_tag=self._next_tag,
            redelivered=False,
            exchange="",
            routing_key="",
            properties=MessageProperties(),
            body=body,
        )
        self.on_message(message)
        return message

    def lose(self, reason: str = "broker went away") -> None:
        self.closed.set_result(BrokerUnavailableError(reason))


class FakeConnection:
    def __init__(self, channel: FakeChannel) -> None:
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.chan = channel

    async def channel(self) -> FakeChannel:
        return self.chan

    async def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(ConnectionResetError("closed by us"))
        if not self.chan.closed.done():
            self.chan.closed.set_result(ConnectionResetError("closed with its connection"))


class Broker:
    """Scripted connection attempts: each is a FakeChannel to serve, or an error to raise."""

    def __init__(self, *script: FakeChannel | Exception) -> None:
        self.script = list(script)
        self.attempts = 0
        self.names: list[str] = []
        self.connections: list[FakeConnection] = []

    async def connect(self, _broker: BrokerUrl, name: str) -> ConsumerConnection:
        self.names.append(name)
        self.attempts += 1
        step = self.script.pop(0) if self.script else BrokerUnavailableError("nothing scripted")
        if isinstance(step, Exception):
            raise step
        connection = FakeConnection(step)
        self.connections.append(connection)
        return connection
