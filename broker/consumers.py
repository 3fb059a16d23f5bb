"""The consumer side of the worker's channel: basic.consume (one or pipelined),
basic.cancel, and each delivery dispatched as a :class:`Message`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.channel import Channel

from broker import pika_internals
from broker.ack_batcher import AckBatcher
from broker.channel_rpc import ChannelRpc
from broker.properties import MessageProperties
from config.errors import BrokerUnavailableError

if TYPE_CHECKING:
    from broker.async_channel import AmqpChannel


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered AMQP message, and the channel it must be settled on."""

    channel: AmqpChannel
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: MessageProperties
    body: bytes

    def ack(self) -> bool:
        """Acknowledge; False if the channel is gone (the broker will redeliver)."""
        return self.channel.settle(self.delivery_tag, ack=True)

    def reject(self, *, requeue: bool) -> bool:
        """Negative-acknowledge; False if the channel is gone."""
        return self.channel.settle(self.delivery_tag, ack=False, requeue=requeue)


OnMessage = Callable[[Message], None]
# One consumer to start: (queue, its message callback, its prefetch).
ConsumeRequest = tuple[str, OnMessage, int]


class Consumers:
    """The consumers on one channel, the prefetch in force, and delivery dispatch."""

    def __init__(self, owner: AmqpChannel, rpc: ChannelRpc, acks: AckBatcher) -> None:
        self._owner = owner  # what each Message is settled through
        self._rpc = rpc
        self._acks = acks
        self._prefetch: int | None = None  # the basic.qos now in force on this channel
        # Resolved with the consumer tag when the broker itself cancels one of our
        # consumers (its queue was deleted): we would otherwise sit "ready" and idle.
        self.cancelled_by_broker: asyncio.Future[str] = rpc.loop.create_future()
        rpc.channel.add_on_cancel_callback(self._on_broker_cancel)

    def _on_broker_cancel(self, frame: pika.frame.Method) -> None:
        if not self.cancelled_by_broker.done():
            self.cancelled_by_broker.set_result(str(frame.method.consumer_tag))

    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> str:
        """Start consuming ``queue`` with at most ``prefetch`` unacked messages."""
        await self._set_prefetch(prefetch)
        deliver = self._deliverer(on_message)
        channel = self._rpc.channel
        tag: str = ""

        def start(cb: Callable[[Any], None]) -> None:
            nonlocal tag
            tag = channel.basic_consume(queue, deliver, auto_ack=False, callback=cb)

        await self._rpc.call(start)
        return tag

    async def consume_many(self, requests: Sequence[ConsumeRequest]) -> list[str]:
        """Start one consumer per ``(queue, on_message, prefetch)``, pipelined; their tags.

        Each run of requests with the same prefetch costs one round trip, not
        one per consumer: all but its last go out as no-wait ``basic.consume``s
        and the last one's ``consume-ok`` confirms them all. A refusal (a
        missing queue) closes the channel and raises BrokerUnavailableError
        naming it; the caller then has no consumer from this call it can use.
        Order the requests by prefetch to keep the ``basic.qos`` calls few.
        """
        tags: list[str] = []
        start = 0
        while start < len(requests):
            prefetch = requests[start][2]
            end = start + 1
            while end < len(requests) and requests[end][2] == prefetch:
                end += 1
            await self._set_prefetch(prefetch)
            for queue, on_message, _ in requests[start : end - 1]:
                try:
                    tag = pika_internals.consume_nowait(
                        self._rpc.channel, queue, self._deliverer(on_message)
                    )
                except (pika.exceptions.AMQPError, ValueError) as exc:
                    raise BrokerUnavailableError(f"consuming {queue} failed: {exc!r}") from None
                tags.append(tag)
            queue, on_message, _ = requests[end - 1]
            tags.append(await self.consume(queue, on_message, prefetch=prefetch))
            start = end
        return tags

    async def _set_prefetch(self, prefetch: int) -> None:
        # Without global_qos the limit applies to each consumer created after it,
        # which gives every subscriber its own in-flight budget on one channel.
        # It stays in force, so the round trip is only needed when it changes
        # (with 1,000 subscribers that halves the start-up RPCs).
        if prefetch != self._prefetch:
            self._prefetch = None  # unknown until the broker confirms
            channel = self._rpc.channel
            await self._rpc.call(lambda cb: channel.basic_qos(prefetch_count=prefetch, callback=cb))
            self._prefetch = prefetch

    def _deliverer(
        self, on_message: OnMessage
    ) -> Callable[[Channel, pika.spec.Basic.Deliver, pika.BasicProperties, bytes], None]:
        """pika's delivery callback for one consumer: each delivery as a Message."""
        owner, received = self._owner, self._acks.received

        def deliver(
            _ch: Channel,
            method: pika.spec.Basic.Deliver,
            properties: pika.BasicProperties,
            body: bytes,
        ) -> None:
            received(method.delivery_tag)
            on_message(
                Message(
                    channel=owner,
                    delivery_tag=method.delivery_tag,
                    redelivered=bool(method.redelivered),
                    exchange=method.exchange,
                    routing_key=method.routing_key,
                    properties=MessageProperties.from_pika(properties),
                    body=body,
                )
            )

        return deliver

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; messages already delivered stay ours to settle."""
        if self._rpc.is_open:
            channel = self._rpc.channel
            await self._rpc.call(lambda cb: channel.basic_cancel(consumer_tag, callback=cb))
