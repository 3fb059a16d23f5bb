"""Replay: moving dead letters back to their subscriber's work queue, as attempt 1.

A letter leaves its DLQ only once the broker has confirmed its copy, and what
stays behind keeps its order (see :mod:`control.dead_letters.reader`).

A letter whose properties could not be decoded is replayed with what could be
read: the headers that could not are left out, the copy says so in
``x-webhook-replay-note``, and :func:`replay_note` gives the tool the same line
to print.  Its raw bytes stay in the backup a purge writes, not in the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from broker.url import BrokerUrl
from config.errors import BrokerError, NackedError, PublishError, TopologyError, UnroutableError
from config.topology import REDELIVER_EXCHANGE, subscriber_of_queue
from control.dead_letters.filters import Filters
from control.dead_letters.model import DeadLetter, iso_utc
from control.dead_letters.reader import (
    QueueReader,
    ScanReport,
    broker_connection,
    dead_letter_queues,
)
from wire import contract

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
    contract.RAW_PROPERTIES,
    contract.RAW_PROPERTIES_SIZE,
    contract.REPLAY_NOTE,
)
# Broker bookkeeping: x-death would make the broker see a dead-letter cycle on the
# way back through a delay queue, x-delivery-count counts our own inspections.
_BROKER_HEADERS = ("x-death", "x-delivery-count")
_BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")


def replay_headers(headers: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Headers for a replayed copy: attempt 1, a fresh retry cycle, marked as replayed."""
    fresh = {
        key: value
        for key, value in headers.items()
        if key not in _CYCLE_HEADERS
        and key not in _BROKER_HEADERS
        # A key that is not UTF-8 arrives as bytes; it is the producer's, kept as is.
        and not (isinstance(key, str) and key.startswith(_BROKER_HEADER_PREFIXES))
    }
    fresh[contract.ATTEMPT] = 1
    fresh[contract.REPLAYED_AT] = iso_utc(now or datetime.now(UTC))
    return fresh


def replay_note(letter: DeadLetter) -> str | None:
    """What a replayed copy of ``letter`` leaves out, when its headers could not all be read."""
    if letter.undecodable is not None:
        why = letter.undecodable
    elif contract.RAW_PROPERTIES in letter.headers:
        # The worker's copy: its reason says what could not be read.
        reason = letter.reason or ""
        prefix = f"{contract.UNDECODABLE_REASON} ("
        why = reason[len(prefix) : -1] if reason.startswith(prefix) else "see its reason"
    else:
        return None
    return f"replayed without the headers that could not be decoded ({why})"


def _replay_properties(letter: DeadLetter) -> pika.BasicProperties:
    props = letter.properties
    headers = replay_headers(letter.headers)
    note = replay_note(letter)
    if note is not None:
        headers[contract.REPLAY_NOTE] = note
    return pika.BasicProperties(
        content_type=props.get("content_type") or contract.CONTENT_TYPE,
        content_encoding=props.get("content_encoding"),
        delivery_mode=contract.PERSISTENT,
        message_id=props.get("message_id"),
        type=props.get("type"),
        timestamp=props.get("timestamp"),
        app_id=props.get("app_id"),
        correlation_id=props.get("correlation_id"),
        headers=headers,
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
    with broker_connection(broker) as connection:
        publisher: BlockingChannel | None = None
        for queue in dead_letter_queues(subscribers):
            if limit is not None and len(result.moved) >= limit:
                break
            routing_key = subscriber_of_queue(queue)
            assert routing_key is not None
            with QueueReader(connection, queue) as reader:
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
