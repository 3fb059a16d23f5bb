"""Reading, replaying and purging the per-subscriber dead-letter queues (operator tools).

How a DLQ is read without losing, reordering or consuming anything: one consumer
per queue, manual acks, a prefetch window as large as the queue's depth, and at the
end the channel is closed with the messages still unacked.  A quorum queue then
returns every unacked message to the head of the queue in its original order.
Replay and purge ack only the messages they have moved or backed up; the rest go
back the same way, so their relative order is kept too.

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

import base64
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from broker.url import BrokerUrl
from config.errors import (
    BrokerError,
    BrokerUnavailableError,
    NackedError,
    PoisonMessageError,
    PublishError,
    TopologyError,
    UnroutableError,
)
from config.topology import REDELIVER_EXCHANGE, dead_letter_queue, subscriber_of_queue
from wire import contract
from wire.envelope import format_timestamp
from wire.queued_event import read_event

# basic.qos prefetch_count is an AMQP short; 0 ("unlimited") is capped at 2000
# credits by quorum queues in 3.10, so it is no way around this bound.
MAX_WINDOW = 65535
# How long a read waits for the next message before deciding the queue has no more
# for it (another client holds them, or the prefetch window is full).
IDLE_SECONDS = 2.0
# How long to wait for a closed read's messages to be back in the queue; only a
# concurrent consumer of the DLQ makes it run out (nothing is lost then either).
RETURN_WAIT_SECONDS = 5.0
# Purge acks only what is already fsynced to the backup file, this many at a time.
PURGE_BATCH = 200

# Headers describing the failed delivery cycle; a replay starts a fresh one.
_CYCLE_HEADERS = (
    contract.ATTEMPT,
    contract.ATTEMPTS,
    contract.FIRST_ATTEMPT_AT,
    contract.LAST_ATTEMPT_AT,
    contract.LAST_STATUS,
    contract.LAST_ERROR,
    contract.DEAD_LETTER_REASON,
    contract.DEAD_LETTERED_AT,
    contract.REPLAYED_AT,
)
# Broker bookkeeping: x-death would make the broker see a dead-letter cycle on the
# way back through a delay queue, x-delivery-count counts our own inspections.
_BROKER_HEADERS = ("x-death", "x-delivery-count")
_BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")

_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ------------------------------------------------------------------ the data


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, with the worker's headers decoded."""

    queue: str
    event_id: str | None
    subscriber: str | None
    event_type: str | None
    attempts: int | None
    last_status: int | None
    last_error: str | None
    dead_lettered_at: datetime | None
    reason: str | None
    headers: dict[str, Any]
    body: bytes = field(repr=False)
    properties: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The fields of one ``list`` row, JSON-ready."""
        return {
            "event_id": self.event_id,
            "subscriber": self.subscriber,
            "event_type": self.event_type,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "dead_lettered_at": _iso(self.dead_lettered_at),
            "reason": self.reason,
            "queue": self.queue,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: the summary, headers, properties and the body."""
        record = self.summary()
        record["headers"] = jsonable(self.headers)
        record["properties"] = jsonable(self.properties)
        try:
            record["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            record["body_base64"] = base64.b64encode(self.body).decode("ascii")
        return record


def jsonable(value: Any) -> Any:
    """AMQP header/property values (bytes, datetimes, Decimals, tables) as JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return _iso(_aware(value))
    if isinstance(value, Decimal):
        return str(value)
    return value


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return format_timestamp(moment.astimezone(UTC))


def _aware(moment: datetime) -> datetime:
    # pika decodes AMQP timestamps as naive UTC; ISO strings may also lack a zone.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    text = _text(value)
    if text is None:
        return None
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _properties_dict(properties: Any) -> dict[str, Any]:
    values = {name: getattr(properties, name, None) for name in _PROPERTY_NAMES}
    return {name: value for name, value in values.items() if value is not None}


def _event_id(properties: Any, body: bytes) -> str | None:
    message_id = _text(getattr(properties, "message_id", None))
    if message_id:
        return message_id
    # Same fallback as the worker, so the id shown is the X-Webhook-Id receivers saw.
    try:
        return read_event(properties, body, max_attempts=1 << 30).event_id
    except PoisonMessageError:
        return None


def _event_type(properties: Any, body: bytes) -> str | None:
    declared = _text(getattr(properties, "type", None))
    if declared:
        return declared
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event = envelope.get("event") if isinstance(envelope, dict) else None
    return event if isinstance(event, str) else None


def decode_dead_letter(queue: str, properties: Any, body: bytes) -> DeadLetter:
    """A :class:`DeadLetter` from a message read from ``queue``.

    Messages the broker dead-lettered itself (work-queue delivery limit) carry no
    worker headers; their reason and time come from ``x-death``.
    """
    headers = dict(getattr(properties, "headers", None) or {})
    deaths = headers.get("x-death")
    last_death = deaths[0] if isinstance(deaths, list) and deaths else {}
    if not isinstance(last_death, dict):
        last_death = {}
    reason = _text(headers.get(contract.DEAD_LETTER_REASON))
    if reason is None and last_death:
        reason = f"broker: {_text(last_death.get('reason')) or 'unknown'}"
    dead_lettered_at = _parse_time(headers.get(contract.DEAD_LETTERED_AT))
    if dead_lettered_at is None:
        dead_lettered_at = _parse_time(last_death.get("time"))
    return DeadLetter(
        queue=queue,
        event_id=_event_id(properties, body),
        subscriber=_text(headers.get(contract.SUBSCRIBER)) or subscriber_of_queue(queue),
        event_type=_event_type(properties, body),
        attempts=_int(headers.get(contract.ATTEMPTS)),
        last_status=_int(headers.get(contract.LAST_STATUS)),
        last_error=_text(headers.get(contract.LAST_ERROR)),
        dead_lettered_at=dead_lettered_at,
        reason=reason,
        headers=headers,
        body=body,
        properties=_properties_dict(properties),
    )


# ------------------------------------------------------------------ filters


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``7d``, ``1h30m`` (units s, m, h, d, w) as a timedelta."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 7d, 1h30m)")
    seconds = sum(
        float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION.findall(compact)
    )
    return timedelta(seconds=seconds)


def parse_since(text: str) -> datetime:
    """An ISO-8601 date or time; without a zone it is taken as UTC."""
    try:
        return _aware(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f"not an ISO-8601 time: {text!r} (use e.g. 2026-01-31 or 2026-01-31T10:30:00Z)"
        ) from None


def event_matches(pattern: str, event_type: str | None) -> bool:
    """Exact type, a dotted prefix (``order`` matches ``order.created``) or a topic pattern."""
    if event_type is None:
        return False
    if "*" in pattern or "#" in pattern:
        return _topic_match(pattern.split("."), event_type.split("."))
    prefix = pattern if pattern.endswith(".") else pattern + "."
    return event_type == pattern or event_type.startswith(prefix)


def _topic_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _topic_match(rest, words[1:])


@dataclass(frozen=True)
class Filters:
    """Which dead letters an operation applies to (all given conditions must hold).

    Time filters use the dead-lettered-at time; a letter without one never matches
    them, so ``--older-than`` cannot purge something of unknown age.
    """

    event: str | None = None
    since: datetime | None = None
    older_than: timedelta | None = None
    event_ids: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        """True when every dead letter matches."""
        return (
            self.event is None
            and self.since is None
            and self.older_than is None
            and not self.event_ids
        )

    def matches(self, letter: DeadLetter, now: datetime | None = None) -> bool:
        """Whether ``letter`` passes every filter."""
        if self.event_ids and letter.event_id not in self.event_ids:
            return False
        if self.event is not None and not event_matches(self.event, letter.event_type):
            return False
        if self.since is not None or self.older_than is not None:
            at = letter.dead_lettered_at
            if at is None:
                return False
            if self.since is not None and at < self.since:
                return False
            if self.older_than is not None:
                cutoff = (now or datetime.now(UTC)) - self.older_than
                if at > cutoff:
                    return False
        return True

    def describe(self) -> dict[str, Any]:
        """The filters that are set, JSON-ready (for audit lines)."""
        described: dict[str, Any] = {}
        if self.event is not None:
            described["event_type"] = self.event
        if self.since is not None:
            described["since"] = _iso(self.since)
        if self.older_than is not None:
            described["older_than_seconds"] = self.older_than.total_seconds()
        if self.event_ids:
            described["event_ids"] = sorted(self.event_ids)
        return described


# ------------------------------------------------------------------ reading


def _connect(broker: BrokerUrl) -> BlockingConnection:
    try:
        return pika.BlockingConnection(broker.parameters(connection_name="webhook-dlq"))
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(
            f"cannot connect to RabbitMQ at {broker.redacted}: {exc!r}"
        ) from None


@contextlib.contextmanager
def _connection(broker: BrokerUrl) -> Iterator[BlockingConnection]:
    connection = _connect(broker)
    try:
        yield connection
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise BrokerError(f"RabbitMQ refused: {exc.reply_text}") from None
    except pika.exceptions.AMQPError as exc:
        # Anything unacked returns to its queue when the connection goes.
        raise BrokerUnavailableError(f"lost the broker connection: {exc!r}") from None
    finally:
        if connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()


def _close_keeping_order(connection: BlockingConnection, channel: BlockingChannel) -> None:
    """Close ``channel`` with its deliveries unacked and *not* rejected one by one.

    ``BlockingChannel.close()`` would basic.reject every delivery it has buffered
    but not yet handed out, and a quorum queue puts rejected messages back ahead
    of the ones returned by the close: the queue would come back reordered.  The
    underlying channel's close only cancels the consumer and closes; the broker
    then returns all unacked messages together, in their original order.
    """
    impl = channel._impl
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


class _QueueReader:
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

    def __enter__(self) -> _QueueReader:
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
            yield tag, decode_dead_letter(self.queue, properties, body)

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


def _queues(subscribers: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(dead_letter_queue(s) for s in subscribers))


def dead_letter_depths(broker: BrokerUrl, subscribers: Sequence[str]) -> dict[str, int | None]:
    """Messages ready in each subscriber's DLQ (None when the queue does not exist)."""
    depths: dict[str, int | None] = {}
    with _connection(broker) as connection:
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

    def note(self, reader: _QueueReader) -> None:
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
    with _connection(broker) as connection:
        for queue in _queues(subscribers):
            if limit is not None and len(found) >= limit:
                break
            with _QueueReader(connection, queue) as reader:
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


# ------------------------------------------------------------------ replay


def replay_headers(headers: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Headers for a replayed copy: attempt 1, a fresh retry cycle, marked as replayed."""
    fresh = {
        key: value
        for key, value in headers.items()
        if key not in _CYCLE_HEADERS
        and key not in _BROKER_HEADERS
        and not key.startswith(_BROKER_HEADER_PREFIXES)
    }
    fresh[contract.ATTEMPT] = 1
    fresh[contract.REPLAYED_AT] = _iso(now or datetime.now(UTC))
    return fresh


def _replay_properties(letter: DeadLetter) -> pika.BasicProperties:
    props = letter.properties
    return pika.BasicProperties(
        content_type=props.get("content_type") or contract.CONTENT_TYPE,
        content_encoding=props.get("content_encoding"),
        delivery_mode=contract.PERSISTENT,
        message_id=props.get("message_id"),
        type=props.get("type"),
        timestamp=props.get("timestamp"),
        app_id=props.get("app_id"),
        correlation_id=props.get("correlation_id"),
        headers=replay_headers(letter.headers),
    )


@dataclass
class ReplayResult:
    """What a replay moved (or, on a dry run, would move) and what it could not."""

    moved: list[DeadLetter] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # queue -> why it stopped there
    report: ScanReport = field(default_factory=ScanReport)


class _Throttle:
    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)  # a CLI run by a person: blocking is the point
        self._next = max(now, self._next) + self._interval


def replay(
    broker: BrokerUrl,
    subscribers: Sequence[str],
    filters: Filters | None = None,
    *,
    limit: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    on_moved: Callable[[DeadLetter], None] | None = None,
) -> ReplayResult:
    """Move matching dead letters back to their subscriber's work queue.

    Each copy goes to ``webhooks.redeliver`` with routing key = subscriber id (only
    that subscriber's work queue is bound to it), attempt 1 and the same event id,
    published with confirms and ``mandatory``; only once the broker confirmed it is
    the original acked.  A crash in between leaves both: a duplicate, never a loss.
    If a queue's copies are refused (no work queue bound, queue full), that queue
    is left as it is and named in ``failed``.  ``rate`` caps moves per second.
    """
    filters = filters or Filters()
    result = ReplayResult()
    throttle = _Throttle(rate)
    now = datetime.now(UTC)
    with _connection(broker) as connection:
        publisher: BlockingChannel | None = None
        for queue in _queues(subscribers):
            if limit is not None and len(result.moved) >= limit:
                break
            routing_key = subscriber_of_queue(queue)
            assert routing_key is not None
            with _QueueReader(connection, queue) as reader:
                for tag, letter in reader:
                    if not filters.matches(letter, now):
                        continue
                    if not dry_run:
                        if publisher is None or not publisher.is_open:
                            publisher = connection.channel()
                            publisher.confirm_delivery()
                        throttle.wait()
                        try:
                            _publish_copy(publisher, routing_key, letter)
                        except PublishError as exc:
                            # Same routing key for the whole queue: the rest would fail too.
                            result.failed[queue] = str(exc)
                            break
                        reader.ack(tag)
                    result.moved.append(letter)
                    if on_moved is not None:
                        on_moved(letter)
                    if limit is not None and len(result.moved) >= limit:
                        break
            result.report.note(reader)
    return result


def _publish_copy(channel: BlockingChannel, routing_key: str, letter: DeadLetter) -> None:
    try:
        channel.basic_publish(
            REDELIVER_EXCHANGE,
            routing_key,
            letter.body,
            _replay_properties(letter),
            mandatory=True,
        )
    except pika.exceptions.UnroutableError:
        raise UnroutableError(
            f"no work queue is bound to {REDELIVER_EXCHANGE} for {routing_key!r} "
            "(subscriber removed? start the worker with it to declare its queue)"
        ) from None
    except pika.exceptions.NackError:
        raise NackedError(
            f"the broker refused the copy for {routing_key!r} (queue full?)"
        ) from None
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            raise TopologyError(
                f"{REDELIVER_EXCHANGE} does not exist: start the worker once to declare it"
            ) from None
        raise BrokerError(f"the broker closed the publish channel: {exc.reply_text}") from None


# ------------------------------------------------------------------ purge


@dataclass
class PurgeResult:
    """What a purge deleted (or, on a dry run, would delete)."""

    purged: list[DeadLetter] = field(default_factory=list)
    backup_file: Path | None = None
    report: ScanReport = field(default_factory=ScanReport)


def default_backup_path(now: datetime | None = None) -> Path:
    """``dlq-backup-<UTC time>.jsonl`` in the current directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(f"dlq-backup-{stamp}.jsonl")


def _backup_line(letter: DeadLetter, purged_at: datetime) -> str:
    record = letter.to_json()
    record["purged_at"] = _iso(purged_at)
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def purge(
    broker: BrokerUrl,
    subscribers: Sequence[str],
    filters: Filters | None = None,
    *,
    limit: int | None = None,
    backup_file: Path | None = None,
    dry_run: bool = False,
    on_purged: Callable[[DeadLetter], None] | None = None,
) -> PurgeResult:
    """Delete matching dead letters, each appended to ``backup_file`` (JSON lines) first.

    A letter is acked only after its backup line is flushed and fsynced, so a crash
    leaves it in the queue (and maybe also in the file), never nowhere.
    ``backup_file=None`` deletes without a backup.
    """
    filters = filters or Filters()
    result = PurgeResult(backup_file=None if dry_run else backup_file)
    now = datetime.now(UTC)
    out: IO[str] | None = None
    if backup_file is not None and not dry_run:
        try:
            out = backup_file.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(f"cannot write the backup file {backup_file}: {exc.strerror}") from None
    try:
        with _connection(broker) as connection:
            for queue in _queues(subscribers):
                if limit is not None and len(result.purged) >= limit:
                    break
                with _QueueReader(connection, queue) as reader:
                    pending: list[tuple[int, DeadLetter]] = []
                    for tag, letter in reader:
                        if not filters.matches(letter, now):
                            continue
                        if dry_run:
                            result.purged.append(letter)
                        else:
                            if out is not None:
                                out.write(_backup_line(letter, now))
                            pending.append((tag, letter))
                            if len(pending) >= PURGE_BATCH:
                                _settle(reader, out, pending, result, on_purged)
                        if limit is not None and len(result.purged) + len(pending) >= limit:
                            break
                    _settle(reader, out, pending, result, on_purged)
                result.report.note(reader)
    finally:
        if out is not None:
            out.close()
    return result


def _settle(
    reader: _QueueReader,
    out: IO[str] | None,
    pending: list[tuple[int, DeadLetter]],
    result: PurgeResult,
    on_purged: Callable[[DeadLetter], None] | None,
) -> None:
    if not pending:
        return
    if out is not None:
        out.flush()
        os.fsync(out.fileno())
    for tag, letter in pending:
        reader.ack(tag)
        result.purged.append(letter)
        if on_purged is not None:
            on_purged(letter)
    pending.clear()
