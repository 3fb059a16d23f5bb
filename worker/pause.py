"""Operator pauses, kept on the broker so every worker replica sees the same state.

A subscriber is paused while the durable queue ``webhooks.<id>.paused`` exists.
The worker creates it when a receiver answers ``410 Gone``; it holds one message
saying why, for whoever looks in the management UI. ``webhook-worker resume ID``
deletes it, and every worker resumes consuming within its poll interval.

These calls are blocking (pika BlockingConnection); the worker runs them in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.topology import pause_marker_queue
from wire import contract

_NOT_FOUND = 404


def mark_paused(broker: BrokerUrl, subscriber_id: str, *, reason: str, event_id: str) -> None:
    """Create the pause marker (idempotent: a second 410 adds a second note, harmless)."""
    note = {
        "subscriber": subscriber_id,
        "reason": reason,
        "event_id": event_id,
        "paused_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "resume_with": f"webhook-worker resume {subscriber_id}",
    }
    with blocking_connection(
        broker, name="webhook-pause", operation="pause marker operation"
    ) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = pause_marker_queue(subscriber_id)
        channel.queue_declare(queue, durable=True)
        channel.basic_publish(
            "",
            queue,
            json.dumps(note).encode(),
            pika.BasicProperties(
                content_type=contract.CONTENT_TYPE, delivery_mode=contract.PERSISTENT
            ),
            mandatory=True,
        )


def paused_among(broker: BrokerUrl, subscriber_ids: Iterable[str]) -> set[str]:
    """The ids among ``subscriber_ids`` that have a pause marker."""
    paused: set[str] = set()
    with blocking_connection(
        broker, name="webhook-pause", operation="pause marker operation"
    ) as connection:
        channel: BlockingChannel | None = None
        for subscriber_id in subscriber_ids:
            if channel is None or not channel.is_open:
                channel = connection.channel()
            try:
                channel.queue_declare(pause_marker_queue(subscriber_id), passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _NOT_FOUND:
                    raise
                channel = None  # a failed passive declare closes the channel
                continue
            paused.add(subscriber_id)
    return paused


def resume(broker: BrokerUrl, subscriber_id: str) -> bool:
    """Delete the pause marker; False if the subscriber was not paused."""
    if subscriber_id not in paused_among(broker, [subscriber_id]):
        return False
    with blocking_connection(
        broker, name="webhook-pause", operation="pause marker operation"
    ) as connection:
        connection.channel().queue_delete(pause_marker_queue(subscriber_id))
    return True
