"""An AMQP channel as awaitables: consume, settle (acks batched), publish with confirms,
declare and unbind.  pika's channel callbacks resolve futures here."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.channel import Channel

from broker import pika_internals
from broker.confirms import ConfirmTracker
from broker.properties import MessageProperties
from config.errors import (
    BrokerUnavailableError,
    NackedError,
    NotFoundError,
    TopologyError,
    UnroutableError,
)
from config.topology import Topology


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

_NOT_FOUND = 404  # AMQP reply code: no such queue or exchange

# See AmqpChannel.flush_acks.
_SETTLED_COMPACT_AT = 10_000

# A publish waiting for its confirm: (future, exchange, routing key, message id).
# A plain tuple because one is made per retry or dead letter published.
_Confirmable = tuple[asyncio.Future[None], str, str, str | None]


def _identity(publish: _Confirmable) -> object:
    return publish[1:]


def _unroutable(publish: _Confirmable) -> UnroutableError:
    return UnroutableError(f"no queue bound on {publish[1]!r} for {publish[2]!r}")


def _nacked(publish: _Confirmable) -> NackedError:
    return NackedError(f"broker refused the message for {publish[1]!r}")


class AmqpChannel:
    """A channel: consume, settle, publish-with-confirm, and declare or unbind."""

    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = channel
        self._loop = loop
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self._confirms: ConfirmTracker[_Confirmable] = ConfirmTracker(
            _identity, unroutable=_unroutable, nacked=_nacked
        )
        self._confirming = False
        self._prefetch: int | None = None  # the basic.qos now in force on this channel
        # Ack batching (see settle): delivery tags in the order they arrived and
        # not yet known to be settled, acks waiting for the end of this loop
        # turn, and tags already settled one by one that are still in the deque.
        self._unsettled: deque[int] = deque()
        self._acks_due: set[int] = set()
        self._settled: set[int] = set()
        self._flush_scheduled = False
        # Resolved with the consumer tag when the broker itself cancels one of our
        # consumers (its queue was deleted): we would otherwise sit "ready" and idle.
        self.cancelled_by_broker: asyncio.Future[str] = loop.create_future()
        channel.add_on_close_callback(self._on_close)
        channel.add_on_cancel_callback(self._on_broker_cancel)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open) and not self.closed.done()

    def _on_broker_cancel(self, frame: pika.frame.Method) -> None:
        if not self.cancelled_by_broker.done():
            self.cancelled_by_broker.set_result(str(frame.method.consumer_tag))

    def _on_close(self, _channel: Any, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        for future, *_ in self._confirms.channel_lost():
            if not future.done():
                future.set_exception(
                    BrokerUnavailableError(f"channel closed before the confirm: {reason!r}")
                )

    async def _rpc(self, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        done: asyncio.Future[Any] = self._loop.create_future()

        def resolve(frame: Any) -> None:
            if not done.done():
                done.set_result(frame)

        try:
            start(resolve)
        except (pika.exceptions.AMQPError, ValueError) as exc:
            raise BrokerUnavailableError(f"channel operation failed: {exc!r}") from None
        return await or_closed(done, self.closed)

    async def _declaring(self, step: str, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        """One declaration RPC. The broker refusing it closes the channel: NotFoundError
        for a missing queue or exchange, TopologyError for any other refusal."""
        try:
            return await self._rpc(start)
        except BrokerUnavailableError:
            reason = self.closed.result() if self.closed.done() else None
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
                error = NotFoundError if reason.reply_code == _NOT_FOUND else TopologyError
                raise error(f"{step} refused: {reason.reply_text}") from None
            raise

    async def declare(self, topology: Topology) -> None:
        """Declare ``topology`` (idempotent, never deletes); TopologyError names a refused step.

        One RPC at a time: the worker declares a few objects per new endpoint
        here, while whole topologies go through broker.declarer, pipelined.
        """
        for exchange in topology.exchanges:
            await self.declare_exchange(exchange.name, exchange.type)
        for queue in topology.queues:
            await self.declare_queue(queue.name, arguments=queue.arguments)
        for binding in topology.bindings:
            await self.bind(binding.queue, binding.exchange, binding.routing_key)

    async def declare_exchange(self, name: str, exchange_type: str) -> None:
        """Declare a durable exchange."""
        await self._declaring(
            f"exchange {name}",
            lambda cb: self._channel.exchange_declare(
                name, exchange_type, durable=True, callback=cb
            ),
        )

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
        frame = await self._declaring(
            f"queue {name or '(server-named)'}",
            lambda cb: self._channel.queue_declare(
                name,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
                callback=cb,
            ),
        )
        return str(frame.method.queue)

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` (binding twice is harmless)."""
        await self._declaring(
            f"binding {exchange} -> {queue} ({routing_key!r})",
            lambda cb: self._channel.queue_bind(
                queue, exchange, routing_key=routing_key, callback=cb
            ),
        )

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove that binding; removing one that does not exist is harmless, but a
        missing queue or exchange is a NotFoundError (and closes the channel)."""
        await self._declaring(
            f"unbinding {exchange} -> {queue} ({routing_key!r})",
            lambda cb: self._channel.queue_unbind(
                queue, exchange, routing_key=routing_key, callback=cb
            ),
        )

    async def enable_confirms(self) -> None:
        """Put the channel in publisher-confirm mode and watch for returned messages."""
        self._channel.add_on_return_callback(self._on_return)
        await self._rpc(
            lambda cb: self._channel.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=cb
            )
        )
        self._confirming = True

    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> str:
        """Start consuming ``queue`` with at most ``prefetch`` unacked messages."""
        await self._set_prefetch(prefetch)
        deliver = self._deliverer(on_message)
        tag: str = ""

        def start(cb: Callable[[Any], None]) -> None:
            nonlocal tag
            tag = self._channel.basic_consume(queue, deliver, auto_ack=False, callback=cb)

        await self._rpc(start)
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
                        self._channel, queue, self._deliverer(on_message)
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
            await self._rpc(
                lambda cb: self._channel.basic_qos(prefetch_count=prefetch, callback=cb)
            )
            self._prefetch = prefetch

    def _deliverer(
        self, on_message: OnMessage
    ) -> Callable[[Channel, pika.spec.Basic.Deliver, pika.BasicProperties, bytes], None]:
        """pika's delivery callback for one consumer: each delivery as a Message."""

        def deliver(
            _ch: Channel,
            method: pika.spec.Basic.Deliver,
            properties: pika.BasicProperties,
            body: bytes,
        ) -> None:
            self._unsettled.append(method.delivery_tag)
            on_message(
                Message(
                    channel=self,
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
        if self.is_open:
            await self._rpc(lambda cb: self._channel.basic_cancel(consumer_tag, callback=cb))

    def settle(self, delivery_tag: int, *, ack: bool, requeue: bool = True) -> bool:
        """Ack or nack one delivery; False if the channel is gone (the broker redelivers).

        Acks are sent at the end of the event-loop turn, and a run of acked tags
        that starts at the oldest unsettled one goes out as one
        ``basic.ack(multiple=True)``: a ``multiple`` ack settles *every*
        unsettled tag up to it, so it is only used where each of those tags has
        been acked here (or already settled on its own).  Nacks go at once.
        """
        # A tag from a closed channel must never be used on a new one: the broker
        # has already requeued that message and will deliver it again.
        if not self.is_open:
            return False
        if ack:
            self._acks_due.add(delivery_tag)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self.flush_acks)
            return True
        try:
            # basic.reject, not basic.nack: from RabbitMQ 4.3 on, only a reject (or a
            # lost consumer) counts towards a quorum queue's delivery limit, the
            # guard that dead-letters a message that keeps crashing the worker.
            self._channel.basic_reject(delivery_tag, requeue=requeue)
        except pika.exceptions.AMQPError:
            return False
        self._settled.add(delivery_tag)
        return True

    def flush_acks(self) -> None:
        """Send the acks collected during this loop turn."""
        self._flush_scheduled = False
        due = self._acks_due
        if not due or not self.is_open:
            due.clear()
            return
        unsettled, settled = self._unsettled, self._settled
        last, covered = 0, 0
        while unsettled and (unsettled[0] in due or unsettled[0] in settled):
            tag = unsettled.popleft()
            if tag in due:
                due.discard(tag)
                last, covered = tag, covered + 1
            else:
                settled.discard(tag)
        try:
            if covered:
                self._channel.basic_ack(last, multiple=covered > 1)
            for tag in due:  # behind a tag still being worked on: one by one
                self._channel.basic_ack(tag)
        except pika.exceptions.AMQPError:
            return  # the channel is going away; the broker redelivers
        finally:
            settled.update(due)
            due.clear()
        if len(settled) > _SETTLED_COMPACT_AT:
            # A delivery left unsettled for long (its next step was uncertain)
            # blocks the run; drop what was settled behind it so memory stays flat.
            self._unsettled = deque(t for t in unsettled if t not in settled)
            settled.clear()

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
        if not self._confirming:
            raise RuntimeError("enable_confirms() first")
        if not self.is_open:
            raise BrokerUnavailableError("channel is closed")
        future: asyncio.Future[None] = self._loop.create_future()
        tag = self._confirms.track((future, exchange, routing_key, properties.message_id))
        try:
            self._channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except pika.exceptions.AMQPError as exc:
            self._confirms.forget(tag)
            raise BrokerUnavailableError(f"publish failed: {exc!r}") from None
        await future

    def _on_return(
        self,
        _ch: Channel,
        method: pika.spec.Basic.Return,
        properties: pika.BasicProperties,
        _body: bytes,
    ) -> None:
        self._confirms.returned((method.exchange, method.routing_key, properties.message_id))

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        settled = self._confirms.settle(
            method.delivery_tag,
            multiple=bool(method.multiple),
            acked=isinstance(method, pika.spec.Basic.Ack),
        )
        for publish, error in settled:
            future = publish[0]
            if future.done():
                continue  # its publisher gave up waiting (cancelled)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def close(self) -> None:
        """Close the channel."""
        if self.is_open:
            try:
                self._channel.close()
            except pika.exceptions.AMQPError:
                return
            await asyncio.wait({self.closed}, timeout=5)


async def or_closed(future: asyncio.Future[Any], closed: asyncio.Future[Any]) -> Any:
    """Await ``future`` unless ``closed`` resolves first."""
    await asyncio.wait({future, closed}, return_when=asyncio.FIRST_COMPLETED)
    if future.done():
        return future.result()
    future.cancel()
    raise BrokerUnavailableError(f"connection closed: {closed.result()!r}")
