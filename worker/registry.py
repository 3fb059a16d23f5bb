"""Remember every subscriber id that had queues, to report removed ones with events left.

A removed subscriber keeps its work queue, and nobody consumes it.  A running
worker that sees the removal unbinds it from ``webhooks.events``; one that
starts after it cannot know its bindings (AMQP cannot list them), which then
keep routing new events there.  AMQP cannot list queues either, so the worker
keeps the ids it has served in ``webhooks.registry`` (one message per id) and,
on every connect and after every live addition or removal, reports each id no
longer configured whose work queue still exists.  Once an operator deletes that
queue, the id is forgotten.

Blocking (pika BlockingConnection); the worker runs it in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.topology import REGISTRY_QUEUE, work_queue
from wire import contract

_NOT_FOUND = 404


def reconcile_registry(broker: BrokerUrl, configured: Sequence[str]) -> dict[str, int]:
    """Record ``configured`` ids; return ``{removed id: messages in its work queue}``."""
    with blocking_connection(
        broker, name="webhook-registry", operation="subscriber registry check"
    ) as connection:
        return _reconcile(connection, set(configured))


def _reconcile(connection: pika.BlockingConnection, configured: set[str]) -> dict[str, int]:
    reader = connection.channel()
    reader.queue_declare(REGISTRY_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    # Held unacked while we work; closing the channel puts back what we keep.
    known: dict[str, int] = {}
    while True:
        method, _properties, body = reader.basic_get(REGISTRY_QUEUE, auto_ack=False)
        if method is None:
            break
        subscriber_id = body.decode("utf-8", "replace")
        if subscriber_id in known:
            reader.basic_ack(method.delivery_tag)  # a duplicate from a concurrent start
        else:
            known[subscriber_id] = method.delivery_tag

    writer = connection.channel()
    writer.confirm_delivery()
    for subscriber_id in sorted(configured - known.keys()):
        writer.basic_publish(
            "",
            REGISTRY_QUEUE,
            subscriber_id.encode(),
            pika.BasicProperties(delivery_mode=contract.PERSISTENT),
            mandatory=True,
        )

    removed: dict[str, int] = {}
    probe: BlockingChannel | None = None
    for subscriber_id, tag in sorted(known.items()):
        if subscriber_id in configured:
            continue
        if probe is None or not probe.is_open:
            probe = connection.channel()
        try:
            frame = probe.queue_declare(work_queue(subscriber_id), passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            reader.basic_ack(tag)  # its queue was deleted: nothing left to report
            continue
        removed[subscriber_id] = int(frame.method.message_count)
    reader.close()
    return removed
