"""Remember every subscriber id that had queues, to report removed ones with events left.

A removed subscriber keeps its work queue, and nobody consumes it.  A running
worker that sees the removal unbinds it from ``webhooks.events``; one that
starts after it cannot know its bindings (AMQP cannot list them), which then
keep routing new events there.  AMQP cannot list queues either, so the workers
keep the ids they have served in ``webhooks.registry`` and report each id no
longer configured whose work queue still exists.  Once an operator deletes
that queue, the id is forgotten.

The layout: a few messages, each holding a set of ids (JSON, header
``x-registry-format: 2``); the registry is the union of all of them.

* :func:`record` (after a live addition) publishes one small message with the
  new ids: one confirmed publish, whatever the registry's size.
* :func:`reconcile_registry` (at every connect, and now and then) is the full
  check: it takes every message (unacked), probes the work queue of each id no
  longer configured, publishes *one* message with the union (minus the ids
  whose queue is gone, plus the configured ones) and only then acks what it
  took.  So the registry shrinks back to one message, and a crash in between
  leaves both the old messages and the new one: a union, nothing lost.  It
  never puts a message back (RabbitMQ 4 drops a quorum queue's message after
  20 returns), so it rewrites even when nothing changed: one message of ~25
  bytes per id.

Two workers at once: a message one of them holds unacked is invisible to the
other, which therefore writes a message with what it saw and its own ids; the
first writes its union; the next check merges both.  No id is lost; an id one
check forgot (its queue was deleted) may come back from the other's message,
which only costs one more probe at the next check.

The old layout (up to this change: one message per id, the bare id as body)
is read as it is, and the first full check rewrites it as one message.

Blocking (pika BlockingConnection); the worker runs it in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.topology import REGISTRY_QUEUE, work_queue
from wire import contract

log = structlog.get_logger("worker")

FORMAT_HEADER = "x-registry-format"
FORMAT = 2
_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
_NOT_FOUND = 404
# An id as the old layout stored it (a subscriber id is one topic word).
_LEGACY_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
# How long a full check waits for the messages the queue said it holds (another
# reader may have taken some meanwhile: those are its to rewrite).
_READ_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class Entry:
    """One message taken from the registry queue (unacked until the rewrite is safe)."""

    tag: int
    body: bytes
    headers: Mapping[str, Any] | None = None


def encode(ids: Iterable[str]) -> tuple[bytes, dict[str, Any]]:
    """A registry message holding ``ids``: its body and headers."""
    return orjson.dumps({"ids": sorted(set(ids))}), {FORMAT_HEADER: FORMAT}


def decode(entry: Entry) -> set[str] | None:
    """The ids in one message (either layout); None when it is neither."""
    headers = entry.headers or {}
    if headers.get(FORMAT_HEADER) == FORMAT:
        try:
            value = orjson.loads(entry.body)
        except orjson.JSONDecodeError:
            return None
        ids = value.get("ids") if isinstance(value, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return None
        return set(ids)
    text = entry.body.decode("utf-8", "replace")
    return {text} if _LEGACY_ID.fullmatch(text) else None


@dataclass
class Contents:
    """What a full check read: the union of ids, and which messages carried them."""

    ids: set[str] = field(default_factory=set)
    readable: list[int] = field(default_factory=list)  # tags to ack once rewritten
    legacy: int = 0  # messages in the old one-id layout
    unreadable: int = 0

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> Contents:
        contents = cls()
        for entry in entries:
            ids = decode(entry)
            if ids is None:
                contents.unreadable += 1
                continue
            contents.ids |= ids
            contents.readable.append(entry.tag)
            if (entry.headers or {}).get(FORMAT_HEADER) != FORMAT:
                contents.legacy += 1
        return contents


class RegistryQueue(Protocol):
    """The registry queue as the full check uses it (a fake stands in for it in tests)."""

    def take_all(self) -> list[Entry]:
        """Every message now ready, left unacked."""
        ...

    def put(self, body: bytes, headers: dict[str, Any]) -> None:
        """Publish one message and wait for the broker's confirm."""
        ...

    def ack(self, tags: Collection[int]) -> None:
        """Drop messages taken (the rest go back when the check ends)."""
        ...

    def queue_messages(self, subscriber_id: str) -> int | None:
        """Messages in ``subscriber_id``'s work queue; None when the queue does not exist."""
        ...


def full_check(queue: RegistryQueue, configured: Collection[str]) -> dict[str, int]:
    """Merge the registry into one message; ``{removed id: messages in its work queue}``."""
    contents = Contents.of(queue.take_all())
    if contents.unreadable:
        log.warning(
            "registry_message_unreadable",
            queue=REGISTRY_QUEUE,
            messages=contents.unreadable,
            hint="left in the queue; delete it from the queue if it is not a registry message",
        )
    removed: dict[str, int] = {}
    gone: set[str] = set()
    for subscriber_id in sorted(contents.ids.difference(configured)):
        messages = queue.queue_messages(subscriber_id)
        if messages is None:
            gone.add(subscriber_id)  # an operator deleted its queue: forget it
        else:
            removed[subscriber_id] = messages
    wanted = (contents.ids - gone) | set(configured)
    # Rewritten every time, never put back: a quorum queue counts each return of a
    # message, and from RabbitMQ 4.0 drops it after 20 (the default delivery limit).
    if contents.readable or wanted:
        queue.put(*encode(wanted))
        queue.ack(contents.readable)  # only now: a crash before leaves a union
        if contents.legacy:
            log.info("registry_migrated", old_messages=contents.legacy, ids=len(wanted))
    return removed


class _BlockingRegistry:
    """RegistryQueue over one blocking connection."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self._connection = connection
        self._reader = connection.channel()
        declared = self._reader.queue_declare(
            REGISTRY_QUEUE, durable=True, arguments=_QUEUE_ARGUMENTS
        )
        self._ready = int(declared.method.message_count)
        self._writer: BlockingChannel | None = None
        self._probe: BlockingChannel | None = None

    def take_all(self) -> list[Entry]:
        if not self._ready:
            return []
        # Pipelined (one basic.get per message was 17 s for the old layout's 10,000).
        entries: list[Entry] = []
        self._reader.basic_qos(prefetch_count=min(self._ready, 65_535))
        for method, properties, body in self._reader.consume(
            REGISTRY_QUEUE, inactivity_timeout=_READ_IDLE_SECONDS
        ):
            if method is None:
                break  # another reader holds the rest
            entries.append(Entry(method.delivery_tag, body, properties.headers))
            if len(entries) >= self._ready:
                break
        self._reader.cancel()  # what arrived after the count goes back, unread
        return entries

    def put(self, body: bytes, headers: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = self._connection.channel()
            self._writer.confirm_delivery()
        self._writer.basic_publish(
            "",
            REGISTRY_QUEUE,
            body,
            pika.BasicProperties(
                content_type=contract.CONTENT_TYPE,
                delivery_mode=contract.PERSISTENT,
                headers=headers,
            ),
            mandatory=True,
        )

    def ack(self, tags: Collection[int]) -> None:
        for tag in tags:
            self._reader.basic_ack(tag)

    def queue_messages(self, subscriber_id: str) -> int | None:
        if self._probe is None or not self._probe.is_open:
            self._probe = self._connection.channel()
        try:
            frame = self._probe.queue_declare(work_queue(subscriber_id), passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            self._probe = None  # a failed passive declare closes the channel
            return None
        return int(frame.method.message_count)

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()  # what was taken and not acked goes back


def reconcile_registry(broker: BrokerUrl, configured: Sequence[str]) -> dict[str, int]:
    """The full check: record ``configured`` ids, merge the registry into one message,
    and return ``{removed id: messages in its work queue}``."""
    with blocking_connection(
        broker, name="webhook-registry", operation="subscriber registry check"
    ) as connection:
        registry = _BlockingRegistry(connection)
        try:
            return full_check(registry, configured)
        finally:
            registry.close()


def record(broker: BrokerUrl, subscriber_ids: Collection[str]) -> None:
    """Add ids to the registry: one small message (the next full check merges it)."""
    if not subscriber_ids:
        return
    with blocking_connection(
        broker, name="webhook-registry", operation="subscriber registry update"
    ) as connection:
        registry = _BlockingRegistry(connection)
        registry.put(*encode(subscriber_ids))
        registry.close()


def queues_left(broker: BrokerUrl, subscriber_ids: Collection[str]) -> dict[str, int]:
    """Of ``subscriber_ids`` (just removed), those whose work queue exists: id -> messages."""
    if not subscriber_ids:
        return {}
    with blocking_connection(
        broker, name="webhook-registry", operation="removed subscriber check"
    ) as connection:
        registry = _BlockingRegistry(connection)
        found = {i: registry.queue_messages(i) for i in sorted(subscriber_ids)}
        registry.close()
    return {i: n for i, n in found.items() if n is not None}
