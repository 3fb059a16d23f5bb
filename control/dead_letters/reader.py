"""Reading a dead-letter queue without losing, reordering or consuming anything.

One consumer per queue, manual acks, a prefetch window as large as the queue's
depth, and at the end the channel is closed with the messages still unacked.  A
quorum queue then returns every unacked message to the head of the queue in its
original order.  Replay and purge ack only the messages they have moved or backed
up; the rest go back the same way, so their relative order is kept too.

Two traps this module avoids (both verified against RabbitMQ 3.10 in
``tests/integration/test_dead_letters.py``):

* ``basic.get`` followed by a channel close returns messages *out of* order;
* pika's ``BlockingChannel.close()`` first rejects (requeues) every delivery it has
  buffered but not handed out yet, which puts later messages ahead of earlier ones.
  :func:`_close_keeping_order` closes the underlying channel instead.

Every read increments a quorum queue's ``x-delivery-count`` header.  The DLQs are
declared without ``x-delivery-limit``, so this never drops or moves a message, and
replay strips the header so the work queue's limit starts from zero.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from broker import pika_internals
from broker.connection import blocking_connection
from broker.properties import MessageProperties
from broker.url import BrokerUrl
from config.topology import dead_letter_queue
from control.dead_letters.filters import Filters
from control.dead_letters.model import DeadLetter, decode_dead_letter

# basic.qos prefetch_count is an AMQP short; 0 ("unlimited") is capped at 2000
# credits by quorum queues in 3.10, so it is no way around this bound.
MAX_WINDOW = 65535
# How long a read waits for the next message before deciding the queue has no more
# for it (another client holds them, or the prefetch window is full).
IDLE_SECONDS = 2.0
# How long to wait for a closed read's messages to be back in the queue; only a
# concurrent consumer of the DLQ makes it run out (nothing is lost then either).
RETURN_WAIT_SECONDS = 5.0


def broker_connection(broker: BrokerUrl) -> contextlib.AbstractContextManager[BlockingConnection]:
    """A connection for one dead-letter operation; pika errors become BrokerErrors."""
    return blocking_connection(broker, name="webhook-dlq", operation="dead-letter operation")


def _close_keeping_order(connection: BlockingConnection, channel: BlockingChannel) -> None:
    """Close ``channel`` with its deliveries unacked and *not* rejected one by one.

    ``BlockingChannel.close()`` would basic.reject every delivery it has buffered
    but not yet handed out, and a quorum queue puts rejected messages back ahead
    of the ones returned by the close: the queue would come back reordered.  The
    underlying channel's close only cancels the consumer and closes; the broker
    then returns all unacked messages together, in their original order.
    """
    # The blocking adapter has no public close without the rejects.
    impl = pika_internals.channel_under(channel)
    if impl.is_open:
        impl.close()
    while not channel.is_closed and connection.is_open:
        connection.process_data_events(time_limit=0.1)


def _wait_until_returned(connection: BlockingConnection, queue: str, expected: int) -> None:
    """Wait (briefly) until the messages a closed reader held are ready again.

    A quorum queue takes them back asynchronously, a few ms after the close.  A
    read started in that gap would see a shorter queue, and returning its head
    behind the late returns would reorder the queue, so the next read (this
    process's or the next command's) must not start before they are back.
    """
    channel = connection.channel()
    deadline = time.monotonic() + RETURN_WAIT_SECONDS
    try:
        while time.monotonic() < deadline:
            try:
                declared = channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return  # deleted meanwhile: nothing to wait for
            if int(declared.method.message_count) >= expected:
                return
            connection.sleep(0.02)
    finally:
        if channel.is_open:
            channel.close()


class QueueReader:
    """Reads one DLQ from head to the depth it had when opened, holding messages unacked.

    It always reads to that depth, even when the caller stops early: a quorum
    queue serves returned messages first and appends newly returned ones behind
    them, so returning only the head of a queue that is already all "returned"
    (after any earlier read) would move that head to the back.  Returned all
    together, they come back in their original order.
    """

    def __init__(self, connection: BlockingConnection, queue: str) -> None:
        self.queue = queue
        self.depth: int | None = None  # None: the queue does not exist
        self.seen = 0
        self.acked = 0
        self._connection = connection
        self._channel: BlockingChannel | None = None
        self._deliveries: Iterator[tuple[Any, Any, bytes]] | None = None

    def __enter__(self) -> QueueReader:
        channel = self._connection.channel()
        try:
            declared = channel.queue_declare(self.queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return self  # no queue, nothing to read
            raise
        self._channel = channel
        self.depth = int(declared.method.message_count)
        if self.depth:
            # A window as large as the queue: every message can be held unacked at
            # once, and little beyond it is pushed to us for nothing.
            channel.basic_qos(prefetch_count=min(MAX_WINDOW, self.depth))
            self._deliveries = channel.consume(
                self.queue, auto_ack=False, inactivity_timeout=IDLE_SECONDS
            )
        return self

    def _next(self) -> tuple[int, Any, bytes] | None:
        if self._deliveries is None or self.depth is None or self.seen >= self.depth:
            return None
        method, properties, body = next(self._deliveries)
        if method is None:
            self._deliveries = None  # idle: nothing more for us (see `complete`)
            return None
        self.seen += 1
        return method.delivery_tag, properties, body

    def __iter__(self) -> Iterator[tuple[int, DeadLetter]]:
        while (delivery := self._next()) is not None:
            tag, properties, body = delivery
            yield tag, decode_dead_letter(self.queue, MessageProperties.from_pika(properties), body)

    @property
    def complete(self) -> bool:
        """Whether every message that was in the queue at the start was read."""
        return self.depth is None or self.seen >= self.depth

    def ack(self, delivery_tag: int) -> None:
        """Remove one read message from the queue."""
        assert self._channel is not None
        self._channel.basic_ack(delivery_tag)
        self.acked += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is None or not self._connection.is_open:
            return  # a lost connection returns everything, in order, by itself
        try:
            while self._next() is not None:
                pass  # read (not decode) the rest: see the class docstring
        finally:
            _close_keeping_order(self._connection, self._channel)
        if self.depth is not None:
            _wait_until_returned(self._connection, self.queue, self.depth - self.acked)


def dead_letter_queues(subscribers: Sequence[str]) -> list[str]:
    """The DLQ names of ``subscribers``, each once, in their order."""
    return list(dict.fromkeys(dead_letter_queue(s) for s in subscribers))


def dead_letter_depths(broker: BrokerUrl, subscribers: Sequence[str]) -> dict[str, int | None]:
    """Messages ready in each subscriber's DLQ (None when the queue does not exist)."""
    depths: dict[str, int | None] = {}
    with broker_connection(broker) as connection:
        channel = connection.channel()
        for subscriber in dict.fromkeys(subscribers):
            try:
                declared = channel.queue_declare(dead_letter_queue(subscriber), passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                depths[subscriber] = None
                channel = connection.channel()
                continue
            depths[subscriber] = int(declared.method.message_count)
    return depths


@dataclass
class ScanReport:
    """What a read saw, beyond the letters it returns."""

    scanned: int = 0
    incomplete: dict[str, int] = field(default_factory=dict)  # queue -> messages not read

    def note(self, reader: QueueReader) -> None:
        """Count what ``reader`` read (call after it is closed, when it has read all it can)."""
        self.scanned += reader.seen
        if not reader.complete and reader.depth is not None:
            self.incomplete[reader.queue] = reader.depth - reader.seen


def list_dead_letters(
    broker: BrokerUrl,
    subscribers: Sequence[str],
    filters: Filters | None = None,
    limit: int | None = None,
    *,
    report: ScanReport | None = None,
) -> list[DeadLetter]:
    """Dead letters matching ``filters``, queue by queue in queue order; changes nothing.

    Stops after ``limit`` matches.  Pass a :class:`ScanReport` to learn whether
    any queue could not be read to its end (over :data:`MAX_WINDOW` messages).
    """
    filters = filters or Filters()
    report = report if report is not None else ScanReport()
    now = datetime.now(UTC)
    found: list[DeadLetter] = []
    with broker_connection(broker) as connection:
        for queue in dead_letter_queues(subscribers):
            if limit is not None and len(found) >= limit:
                break
            with QueueReader(connection, queue) as reader:
                for _tag, letter in reader:
                    if filters.matches(letter, now):
                        found.append(letter)
                        if limit is not None and len(found) >= limit:
                            break
            report.note(reader)
    return found


def find(broker: BrokerUrl, subscribers: Sequence[str], event_id: str) -> list[DeadLetter]:
    """Every dead letter with this event id (an event can be dead in several DLQs)."""
    return list_dead_letters(broker, subscribers, Filters(event_ids=frozenset({event_id})))
