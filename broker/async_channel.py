"""An AMQP channel as awaitables: consume, settle (acks batched), publish with confirms,
declare and unbind.  pika's channel callbacks resolve futures in the parts it is made of:
:mod:`broker.channel_rpc`, :mod:`broker.declarations`, :mod:`broker.consumers`,
:mod:`broker.ack_batcher` and :mod:`broker.confirmed_publisher`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
from pika.channel import Channel

from broker.ack_batcher import AckBatcher
from broker.channel_rpc import ChannelRpc
from broker.confirmed_publisher import ConfirmedPublisher
from broker.consumers import ConsumeRequest, Consumers, Message, OnMessage
from broker.declarations import Declarations
from config.topology import Topology

# Message and the consumer types are part of this module's interface.
__all__ = ["AmqpChannel", "ConsumeRequest", "Message", "OnMessage"]


class AmqpChannel:
    """A channel: consume, settle, publish-with-confirm, and declare or unbind."""

    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self._rpc = rpc = ChannelRpc(channel, loop)
        self.closed = rpc.closed
        self._declarations = Declarations(rpc)
        self._publisher = ConfirmedPublisher(rpc)
        self._acks = AckBatcher(rpc)
        channel.add_on_close_callback(self._on_close)
        self._consumers = Consumers(self, rpc, self._acks)
        self.cancelled_by_broker = self._consumers.cancelled_by_broker

    @property
    def is_open(self) -> bool:
        return self._rpc.is_open

    def _on_close(self, _channel: Any, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        self._publisher.channel_lost(reason)

    async def declare(self, topology: Topology) -> None:
        """Declare ``topology`` (idempotent, never deletes); TopologyError names a refused step."""
        await self._declarations.declare(topology)

    async def declare_exchange(self, name: str, exchange_type: str) -> None:
        """Declare a durable exchange."""
        await self._declarations.declare_exchange(name, exchange_type)

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Declare a queue and return its name (the broker picks one when ``name`` is "")."""
        return await self._declarations.declare_queue(
            name, durable=durable, exclusive=exclusive, auto_delete=auto_delete, arguments=arguments
        )

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` (binding twice is harmless)."""
        await self._declarations.bind(queue, exchange, routing_key)

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove that binding (see :meth:`broker.declarations.Declarations.unbind`)."""
        await self._declarations.unbind(queue, exchange, routing_key)

    async def enable_confirms(self) -> None:
        """Put the channel in publisher-confirm mode and watch for returned messages."""
        await self._publisher.enable_confirms()

    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> str:
        """Start consuming ``queue`` with at most ``prefetch`` unacked messages."""
        return await self._consumers.consume(queue, on_message, prefetch=prefetch)

    async def consume_many(self, requests: Sequence[ConsumeRequest]) -> list[str]:
        """Start one consumer per ``(queue, on_message, prefetch)``, pipelined; their tags."""
        return await self._consumers.consume_many(requests)

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; messages already delivered stay ours to settle."""
        await self._consumers.cancel(consumer_tag)

    def settle(self, delivery_tag: int, *, ack: bool, requeue: bool = True) -> bool:
        """Ack or nack one delivery; False if the channel is gone (the broker redelivers).
        Acks go out batched at the end of the loop turn (see :mod:`broker.ack_batcher`)."""
        return self._acks.settle(delivery_tag, ack=ack, requeue=requeue)

    def flush_acks(self) -> None:
        """Send the acks collected during this loop turn."""
        self._acks.flush()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
    ) -> None:
        """Publish ``mandatory`` and wait for the broker's confirm.

        Raises UnroutableError (no queue bound), NackedError (queue refused), or
        BrokerUnavailableError (channel lost before the confirm).
        """
        await self._publisher.publish(exchange, routing_key, body, properties)

    async def close(self) -> None:
        """Close the channel."""
        if self.is_open:
            try:
                self._rpc.channel.close()
            except pika.exceptions.AMQPError:
                return
            await asyncio.wait({self.closed}, timeout=5)
