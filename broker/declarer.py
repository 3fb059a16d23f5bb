"""Declares the topology (config.topology) on a broker: idempotent, never deletes."""

from __future__ import annotations

from collections.abc import Sequence

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from broker import pika_internals
from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, TopologyError
from config.subscriber_record import AnySubscriber
from config.subscribers import RetryPolicy
from config.topology import Topology, build_topology


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
    if not topology.exchanges:
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
    # Called without a callback, these send the no-wait form of each method.
    impl = pika_internals.channel_under(channel)
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
    broker: BrokerUrl, subscribers: Sequence[AnySubscriber], retry: RetryPolicy
) -> Topology:
    """Connect, declare the whole topology, disconnect. Safe to call any number of times."""
    topology = build_topology(subscribers, retry)
    with blocking_connection(broker, name="webhook-topology", operation="declaring") as connection:
        apply_topology(connection.channel(), topology)
    return topology
