"""Operator pauses, kept on the broker so every worker replica sees the same state.

A subscriber is paused while the durable queue ``webhooks.<id>.paused`` exists.
It is the one pause mechanism: the worker creates it when a receiver answers
``410 Gone``, ``webhook-api``'s pause creates it (and also flags the store, to
show it), ``webhook-worker resume ID`` and the API's resume delete it.  The
marker holds one message saying why, for whoever looks in the management UI.

Why markers and not the store's ``paused`` column: a file-backed worker has no
store, and a 410 seen by any replica must pause every replica, store or not;
one mechanism that works for both keeps a pause from existing in one place and
not the other.  What made markers slow was only how they were checked.

Checking is one pipelined pass on one channel, whatever the number of ids:
each id gets an empty ``mandatory`` publish to its marker's name on the
default exchange.  A missing marker is unroutable and comes back as
``basic.return``; one synchronous call after the last publish is the barrier
(RabbitMQ sends a publish's return before it handles the next method on the
channel), so every return is in when it answers.  A marker is declared with
``x-max-length: 1`` and ``x-overflow: reject-publish``: it keeps its note and
refuses every probe (refused is not unroutable: no return).  The old check, a
passive declare per id, closed the channel on each miss (the common case) and
took 12.6 s for 10,000 ids; this one is about a second, on a thread.  Probes
count in RabbitMQ's "unroutable returned" figures; they come from connections
named ``webhook-pause``.

Markers made before (no arguments) would keep every probe: a check that finds
one re-creates it with the arguments and its note (``pause_marker_migrated``);
that costs one round trip per paused subscriber per check.

Every replica follows every marker: whoever creates or deletes one announces
it on ``webhooks.control`` (``{"version": 0, "pause_marker": ID}``; version 0
so that it never makes a worker reload its subscribers), and each worker
checks that marker at once (``worker.pause_follower``).  A worker checks its paused
subscribers' markers at each poll, and every marker every few polls and at
each connect, so an announcement lost costs a delay, never a pause.

These calls are blocking (pika BlockingConnection); the worker runs them in a thread.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime

import pika
import pika.exceptions
import pika.spec
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.topology import CONTROL_EXCHANGE, pause_marker_queue
from wire import contract

log = structlog.get_logger("worker")

_CONNECTION_NAME = "webhook-pause"
_OPERATION = "pause marker operation"
# The note stays; every later message, probes included, is refused (not returned).
MARKER_ARGUMENTS = {"x-max-length": 1, "x-overflow": "reject-publish"}
_PROBE = pika.BasicProperties(delivery_mode=1, expiration="0")
_NOTE_PROPERTIES = pika.BasicProperties(
    content_type=contract.CONTENT_TYPE, delivery_mode=contract.PERSISTENT
)
_PRECONDITION_FAILED = 406


def mark_paused(broker: BrokerUrl, subscriber_id: str, *, reason: str, event_id: str) -> None:
    """Create the pause marker (idempotent: a second 410 adds a second note, harmless)."""
    note = {
        "subscriber": subscriber_id,
        "reason": reason,
        "event_id": event_id,
        "paused_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "resume_with": f"webhook-worker resume {subscriber_id}",
    }
    with blocking_connection(broker, name=_CONNECTION_NAME, operation=_OPERATION) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = pause_marker_queue(subscriber_id)
        try:
            channel.queue_declare(queue, durable=True, arguments=MARKER_ARGUMENTS)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise
            return  # a marker from before: paused already (the next check migrates it)
        # Refused when paused already: the marker keeps its first note.
        with contextlib.suppress(pika.exceptions.NackError):
            channel.basic_publish("", queue, json.dumps(note).encode(), _NOTE_PROPERTIES)
        _announce(channel, subscriber_id)


def paused_among(broker: BrokerUrl, subscriber_ids: Iterable[str]) -> set[str]:
    """The ids among ``subscriber_ids`` that have a pause marker (one pipelined pass)."""
    ids = list(dict.fromkeys(subscriber_ids))
    if not ids:
        return set()
    with blocking_connection(broker, name=_CONNECTION_NAME, operation=_OPERATION) as connection:
        paused = probe_markers(connection.channel(), ids)
        for subscriber_id in sorted(paused):
            _migrate_old_marker(connection, subscriber_id)
        return paused


def probe_markers(channel: BlockingChannel, subscriber_ids: list[str]) -> set[str]:
    """On an open channel not in confirm mode: the ids whose marker queue exists."""
    queues = {pause_marker_queue(subscriber_id): subscriber_id for subscriber_id in subscriber_ids}
    missing: set[str] = set()

    def returned(
        _channel: BlockingChannel,
        method: pika.spec.Basic.Return,
        _properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        missing.add(method.routing_key)

    channel.add_on_return_callback(returned)
    for queue in queues:
        channel.basic_publish("", queue, b"", _PROBE, mandatory=True)
    # The barrier: answered only after the broker handled every publish above.
    channel.basic_qos(prefetch_count=0)
    channel.connection.process_data_events(time_limit=0)  # dispatch the returns
    return {subscriber_id for queue, subscriber_id in queues.items() if queue not in missing}


def _migrate_old_marker(connection: BlockingConnection, subscriber_id: str) -> None:
    """Give a marker made before ``MARKER_ARGUMENTS`` existed those arguments, note kept."""
    queue = pause_marker_queue(subscriber_id)
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=MARKER_ARGUMENTS)
        return  # as it should be (declaring it again changes nothing)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
    channel = connection.channel()
    channel.confirm_delivery()
    _method, properties, note = channel.basic_get(queue, auto_ack=False)
    # Deleted and declared back to back: a replica checking in between sees no pause
    # for one poll at worst, and the next 410 pauses it again.
    channel.queue_delete(queue)
    channel.queue_declare(queue, durable=True, arguments=MARKER_ARGUMENTS)
    if note is not None:
        channel.basic_publish("", queue, note, properties or _NOTE_PROPERTIES)
    log.info("pause_marker_migrated", subscriber=subscriber_id, queue=queue)


def resume(broker: BrokerUrl, subscriber_id: str) -> bool:
    """Delete the pause marker; False if the subscriber was not paused."""
    with blocking_connection(broker, name=_CONNECTION_NAME, operation=_OPERATION) as connection:
        channel = connection.channel()
        if not probe_markers(channel, [subscriber_id]):
            return False
        channel.queue_delete(pause_marker_queue(subscriber_id))
        _announce(channel, subscriber_id)
    return True


def _announce(channel: BlockingChannel, subscriber_id: str) -> None:
    """Tell every worker to check this marker now (best effort: polls cover a loss)."""
    try:
        channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        channel.basic_publish(
            CONTROL_EXCHANGE,
            "",
            json.dumps({"version": 0, "pause_marker": subscriber_id}).encode(),
            pika.BasicProperties(content_type=contract.CONTENT_TYPE, delivery_mode=1),
        )
    except pika.exceptions.AMQPError as exc:
        log.warning("pause_announce_failed", subscriber=subscriber_id, error=repr(exc))
