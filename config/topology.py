"""RabbitMQ topology as data, and the one function that declares it.

Every exchange and queue name is built here and nowhere else.

Layout (see README, "Design: topology"):

* ``webhooks.events`` (topic): producers publish here, routing key = event type.
* ``webhooks.<id>.work`` (quorum): one per subscriber, bound to ``webhooks.events``
  with the subscriber's patterns and to ``webhooks.redeliver`` with its id.
* ``webhooks.<id>.dlq`` (quorum): one per subscriber, bound to ``webhooks.dead``
  with its id.
* ``webhooks.delay.<ms>ms`` (fanout exchange + quorum queue): one per retry delay,
  shared by all subscribers. The queue has a fixed TTL; expired messages are
  dead-lettered (at-least-once) to ``webhooks.redeliver`` keeping their routing
  key, which the worker sets to the subscriber id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from config.broker import BrokerUrl, blocking_connection
from config.errors import BrokerUnavailableError, TopologyError
from config.subscribers import RetryPolicy, Subscriber

EVENTS_EXCHANGE = "webhooks.events"
REDELIVER_EXCHANGE = "webhooks.redeliver"
DEAD_LETTER_EXCHANGE = "webhooks.dead"

# A worker that crashes on a message over and over must not loop forever: after
# this many deliveries the broker dead-letters it to the subscriber's DLQ.
WORK_QUEUE_DELIVERY_LIMIT = 20


def work_queue(subscriber_id: str) -> str:
    """Name of the queue the worker consumes for ``subscriber_id``."""
    return f"webhooks.{subscriber_id}.work"


def dead_letter_queue(subscriber_id: str) -> str:
    """Name of ``subscriber_id``'s dead-letter queue (the only names ending in ``.dlq``)."""
    return f"webhooks.{subscriber_id}.dlq"


# Holds one message per subscriber id that ever had queues, so the worker can
# report a removed subscriber whose work queue still holds events.
REGISTRY_QUEUE = "webhooks.registry"


def pause_marker_queue(subscriber_id: str) -> str:
    """Name of the queue whose existence means ``subscriber_id`` is paused (410 Gone)."""
    return f"webhooks.{subscriber_id}.paused"


def delay_milliseconds(delay_seconds: float) -> int:
    """A retry delay as the whole milliseconds used in names and TTLs."""
    return max(1, round(delay_seconds * 1000))


def delay_exchange(delay_seconds: float) -> str:
    """Name of the fanout exchange in front of the delay queue for this delay."""
    return f"webhooks.delay.{delay_milliseconds(delay_seconds)}ms"


def delay_queue(delay_seconds: float) -> str:
    """Name of the delay queue holding messages for ``delay_seconds``."""
    return f"webhooks.delay.{delay_milliseconds(delay_seconds)}ms"


def subscriber_of_queue(queue: str) -> str | None:
    """The subscriber id in a work or dead-letter queue name, else None."""
    parts = queue.split(".")
    if len(parts) == 3 and parts[0] == "webhooks" and parts[2] in ("work", "dlq"):
        return parts[1]
    return None


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Everything to declare, in order: exchanges, then queues, then bindings."""

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def build_topology(subscribers: Iterable[Subscriber], retry: RetryPolicy) -> Topology:
    """The full topology for these subscribers and retry delays (pure data, no I/O)."""
    exchanges = [
        Exchange(EVENTS_EXCHANGE, "topic"),
        Exchange(REDELIVER_EXCHANGE, "direct"),
        Exchange(DEAD_LETTER_EXCHANGE, "direct"),
    ]
    queues: list[Queue] = []
    bindings: list[Binding] = []

    for delay in sorted(set(retry.delays_seconds)):
        exchanges.append(Exchange(delay_exchange(delay), "fanout"))
        queues.append(
            Queue(
                delay_queue(delay),
                _quorum(
                    **{
                        # One fixed TTL per queue: with per-message expiry a long
                        # delay at the head would hold back shorter ones behind it.
                        "x-message-ttl": delay_milliseconds(delay),
                        "x-dead-letter-exchange": REDELIVER_EXCHANGE,
                        # at-least-once: the broker keeps the message until the work
                        # queue confirms it, so an expiry never loses an event.
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
            )
        )
        bindings.append(Binding(delay_exchange(delay), delay_queue(delay), ""))

    for sub in subscribers:
        work, dlq = work_queue(sub.id), dead_letter_queue(sub.id)
        queues.append(
            Queue(
                work,
                _quorum(
                    **{
                        "x-delivery-limit": WORK_QUEUE_DELIVERY_LIMIT,
                        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                        "x-dead-letter-routing-key": sub.id,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
            )
        )
        queues.append(Queue(dlq, _quorum()))
        bindings.extend(Binding(EVENTS_EXCHANGE, work, pattern) for pattern in sub.events)
        bindings.append(Binding(REDELIVER_EXCHANGE, work, sub.id))
        bindings.append(Binding(DEAD_LETTER_EXCHANGE, dlq, sub.id))

    return Topology(tuple(exchanges), tuple(queues), tuple(bindings))


def apply_topology(channel: BlockingChannel, topology: Topology) -> None:
    """Declare ``topology`` on an open channel. Idempotent; never deletes anything.

    Queues of subscribers that left the file are simply not touched, so their
    messages stay where an operator can see them.

    The declarations are pipelined (sent without waiting for each reply, then
    one round trip confirms them all): with 1,000 subscribers that is ~5,000
    objects, which one RPC at a time took seconds on every worker start.  If
    the broker refuses one, they are repeated one at a time on a new channel
    to name the culprit, and TopologyError is raised either way.
    """
    if not topology.exchanges or not hasattr(channel, "_impl"):
        _apply_one_by_one(channel, topology)
        return
    try:
        _apply_pipelined(channel, topology)
    except pika.exceptions.ChannelClosedByBroker as exc:
        try:
            _apply_one_by_one(channel.connection.channel(), topology)
        except pika.exceptions.AMQPError as again:
            raise BrokerUnavailableError(f"declaring the topology failed: {again!r}") from None
        raise TopologyError(f"declaring the topology failed: {exc.reply_text}") from None
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(f"declaring the topology failed: {exc!r}") from None


def _apply_pipelined(channel: BlockingChannel, topology: Topology) -> None:
    # pika's channel underneath the blocking wrapper: called without a callback,
    # these send the no-wait form of each method and return at once.
    impl = channel._impl
    for exchange in topology.exchanges:
        impl.exchange_declare(exchange.name, exchange.type, durable=True)
    for queue in topology.queues:
        impl.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    for binding in topology.bindings:
        impl.queue_bind(binding.queue, binding.exchange, routing_key=binding.routing_key)
    # A channel's methods are handled in order, so the reply to this (repeated,
    # harmless) declaration means every one above succeeded; a failure closes
    # the channel, which this call raises as ChannelClosedByBroker.
    first = topology.exchanges[0]
    channel.exchange_declare(first.name, first.type, durable=True)


def _apply_one_by_one(channel: BlockingChannel, topology: Topology) -> None:
    step = "?"
    try:
        for exchange in topology.exchanges:
            step = f"exchange {exchange.name}"
            channel.exchange_declare(exchange.name, exchange.type, durable=True)
        for queue in topology.queues:
            step = f"queue {queue.name}"
            channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
        for binding in topology.bindings:
            step = f"binding {binding.exchange} -> {binding.queue} ({binding.routing_key!r})"
            channel.queue_bind(binding.queue, binding.exchange, routing_key=binding.routing_key)
    except pika.exceptions.ChannelClosedByBroker as exc:
        hint = ""
        if exc.reply_code == 406:
            hint = (
                " (it exists with other arguments: drain and delete it, "
                "or restore the previous settings)"
            )
        raise TopologyError(f"declaring {step} failed: {exc.reply_text}{hint}") from None
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(f"declaring {step} failed: {exc!r}") from None


def declare_topology(
    broker: BrokerUrl, subscribers: Sequence[Subscriber], retry: RetryPolicy
) -> Topology:
    """Connect, declare the whole topology, disconnect. Safe to call any number of times."""
    topology = build_topology(subscribers, retry)
    with blocking_connection(broker, name="webhook-topology", operation="declaring") as connection:
        apply_topology(connection.channel(), topology)
    return topology
