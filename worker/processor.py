"""What the worker does with one message: deliver, then ack, retry or dead-letter.

The rule that keeps events safe: a message is acked only after its next home is
certain, i.e. the receiver answered 2xx, or the broker confirmed the copy we
published to a delay queue or a dead-letter queue.  If anything in between
fails, the message stays unacked and the broker hands it out again.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import structlog

from broker.async_channel import AmqpChannel, Message
from broker.properties import MessageProperties
from config.errors import BrokerError, PoisonMessageError, PublishError
from config.subscriber_record import AnySubscriber
from config.subscribers import RetryPolicy
from config.topology import DEAD_LETTER_EXCHANGE, delay_exchange
from wire import contract
from wire.envelope import format_timestamp
from wire.queued_event import QueuedEvent, read_event
from worker import metrics
from worker.attempt_capture import capture
from worker.attempt_log import AttemptLog
from worker.delivery import Deliverer, DeliveryResult
from worker.fact_outbox import note_dead_lettered
from worker.retry import DeadLetter, Retry, next_attempt

log = structlog.get_logger("worker")

_LAST_ERROR_CHARS = 300


def _now_iso() -> str:
    return format_timestamp(datetime.now(UTC))


def _event_label(event_type: str | None) -> str:
    # Event types are a product-defined set; anything odd collapses to one value
    # so a bad producer cannot explode the metric's cardinality.
    if (
        event_type
        and len(event_type) <= 64
        and event_type.replace(".", "").replace("_", "").isalnum()
    ):
        return event_type
    return "invalid"


def _moved_properties(
    properties: MessageProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """Properties for a copy of a message: same identity, updated headers."""
    return pika.BasicProperties(
        content_type=properties.content_type or contract.CONTENT_TYPE,
        delivery_mode=contract.PERSISTENT,
        message_id=properties.message_id,
        type=properties.type,
        timestamp=properties.timestamp,
        app_id=properties.app_id,
        correlation_id=properties.correlation_id,
        headers=headers,
    )


def _raw_properties_headers(raw: bytes) -> dict[str, Any]:
    """The undecodable property bytes for the operator, capped so the copy fits in a frame."""
    return {
        contract.RAW_PROPERTIES: base64.b64encode(raw[: contract.RAW_PROPERTIES_CAP]).decode(),
        contract.RAW_PROPERTIES_SIZE: len(raw),
    }


@dataclass(frozen=True)
class Settlement:
    """One attempt's result and where the message went after it (None: delivered, acked)."""

    result: DeliveryResult
    step: Retry | DeadLetter | None = None


class MessageProcessor:
    """Delivers one message and settles it safely."""

    def __init__(
        self,
        deliverer: Deliverer,
        retry: RetryPolicy,
        *,
        requeue_delay_seconds: float = 5.0,
        attempt_log: AttemptLog | None = None,
    ) -> None:
        self._deliverer = deliverer
        self._attempt_log = attempt_log
        self._retry = retry
        self._requeue_delay = requeue_delay_seconds

    async def process(
        self, subscriber: AnySubscriber, message: Message, publisher: AmqpChannel
    ) -> Settlement | None:
        """Handle ``message`` from ``subscriber``'s work queue; never raises for bad input.

        Returns the HTTP attempt's result and the retry decision taken on it (for
        the circuit breaker and pauses), or None when no attempt was made
        (unreadable message) or the message could not be settled.
        """
        in_flight = metrics.instruments(subscriber.id).in_flight
        in_flight.inc()
        try:
            return await self._process(subscriber, message, publisher)
        except PublishError as exc:
            # The broker is up but refused the copy (missing binding, queue full).
            # Hand the message back after a pause; the work queue's delivery limit
            # dead-letters it if this never heals, so it cannot loop forever.
            log.error(
                "move_refused_requeueing",
                subscriber=subscriber.id,
                event_id=message.properties.message_id,
                error=str(exc),
            )
            await asyncio.sleep(self._requeue_delay)
            message.reject(requeue=True)
            return None
        except BrokerError as exc:
            # The next step could not be made certain: leave the message unacked;
            # the broker redelivers it (possibly to another worker).
            log.warning(
                "message_left_unacked",
                subscriber=subscriber.id,
                event_id=message.properties.message_id,
                error=str(exc),
            )
            return None
        except Exception:
            # A bug met an input nobody foresaw. Requeue after a pause rather than
            # hold the message unacked forever; the work queue's delivery limit
            # dead-letters it if it keeps crashing us.
            log.exception(
                "message_processing_crashed",
                subscriber=subscriber.id,
                event_id=message.properties.message_id,
            )
            await asyncio.sleep(self._requeue_delay)
            message.reject(requeue=True)
            return None
        finally:
            in_flight.dec()

    async def _process(
        self, subscriber: AnySubscriber, message: Message, publisher: AmqpChannel
    ) -> Settlement | None:
        undecodable = message.properties.undecodable
        if undecodable is not None:
            # Headers it needs (account, attempt) may be among those that could not
            # be read: it is never delivered, and the operator sees its raw bytes.
            reason = f"{contract.UNDECODABLE_REASON} ({undecodable})"
            await self._dead_letter_unread(subscriber, message, publisher, reason)
            return None
        try:
            event = read_event(
                message.properties, message.body, max_attempts=self._retry.max_attempts
            )
        except PoisonMessageError as exc:
            await self._dead_letter_unread(subscriber, message, publisher, f"poison: {exc}")
            return None
        if event.account is None:
            reason = f"poison: no valid {contract.ACCOUNT} header (the merchant's account id)"
            await self._dead_letter_unread(subscriber, message, publisher, reason)
            return None
        if not subscriber.receives_account(event.account):
            # Only a wrong binding (or a hand-made publish) gets here: the event
            # never reaches this endpoint, and operators see why in its DLQ.
            reason = f"wrong_account: event of account {event.account!r}"
            await self._dead_letter_unread(subscriber, message, publisher, reason)
            return None

        result = await self._deliverer.deliver(subscriber, event)
        instruments = metrics.instruments(subscriber.id)
        instruments.delivered(_event_label(event.event_type), result.outcome, result.status)
        instruments.attempt_duration.observe(result.duration_seconds)
        if result.ok:
            # The hot path: one log call, no bound logger (profiling showed both
            # the bind and label lookups among the worker's top costs).
            log.info(
                "delivery_succeeded",
                subscriber=subscriber.id,
                account=event.account,
                event_type=event.event_type,
                event_id=event.event_id,
                attempt=event.attempt,
                status=result.status,
                outcome=result.outcome,
                duration_ms=round(result.duration_seconds * 1000, 1),
                host=subscriber.host,
            )
            message.ack()
            self._record(subscriber, event, result, None)
            if event.occurred_at is not None:
                occurred = event.occurred_at
                if occurred.tzinfo is None:
                    occurred = occurred.replace(tzinfo=UTC)
                instruments.end_to_end.observe(max(0.0, time.time() - occurred.timestamp()))
            return Settlement(result)

        bound = log.bind(
            subscriber=subscriber.id,
            account=event.account,
            event_type=event.event_type,
            event_id=event.event_id,
            attempt=event.attempt,
        )
        bound.info(
            "delivery_failed",
            status=result.status,
            outcome=result.outcome,
            duration_ms=round(result.duration_seconds * 1000, 1),
            error=result.error,
            host=subscriber.host,
        )

        headers = self._failure_headers(subscriber, message, event, result)
        step = next_attempt(event.attempt, result, self._retry)
        # Recorded as decided: if moving the message fails, it comes back and its
        # next attempt is a record of its own (its start time differs).
        self._record(subscriber, event, result, step)
        if isinstance(step, DeadLetter):
            headers[contract.DEAD_LETTER_REASON] = step.reason
            headers[contract.DEAD_LETTERED_AT] = _now_iso()
            await publisher.publish(
                DEAD_LETTER_EXCHANGE,
                subscriber.id,
                message.body,
                _moved_properties(message.properties, headers),
            )
            message.ack()
            instruments.dead_lettered(step.reason)
            note_dead_lettered(subscriber, event.event_id, step.reason)
            bound.warning(
                "dead_lettered",
                reason=step.reason,
                last_status=result.status,
                last_error=result.error,
            )
            return Settlement(result, step)

        headers[contract.ATTEMPT] = step.attempt
        await publisher.publish(
            delay_exchange(step.delay_seconds),
            subscriber.id,
            message.body,
            _moved_properties(message.properties, headers),
        )
        message.ack()
        instruments.retry_scheduled(step.attempt)
        bound.info("retry_scheduled", next_attempt=step.attempt, delay_seconds=step.delay_seconds)
        return Settlement(result, step)

    def _record(
        self,
        subscriber: AnySubscriber,
        event: QueuedEvent,
        result: DeliveryResult,
        step: Retry | DeadLetter | None,
    ) -> None:
        """Hand the attempt's record to the delivery log, if on; never fails the delivery."""
        if self._attempt_log is None:
            return
        try:
            self._attempt_log.record(capture(subscriber, event, result, step))
        except Exception:
            log.exception(
                "delivery_log_record_failed", subscriber=subscriber.id, event_id=event.event_id
            )

    def _failure_headers(
        self,
        subscriber: AnySubscriber,
        message: Message,
        event: QueuedEvent,
        result: DeliveryResult,
    ) -> dict[str, Any]:
        now = _now_iso()
        headers = dict(message.properties.headers)
        headers[contract.SUBSCRIBER] = subscriber.id
        headers[contract.FIRST_ATTEMPT_AT] = event.first_attempt_at or now
        headers[contract.LAST_ATTEMPT_AT] = now
        headers[contract.LAST_STATUS] = result.status
        headers[contract.LAST_ERROR] = (result.error or "")[:_LAST_ERROR_CHARS]
        headers[contract.ATTEMPTS] = event.attempt
        return headers

    async def _dead_letter_unread(
        self, subscriber: AnySubscriber, message: Message, publisher: AmqpChannel, reason: str
    ) -> None:
        """Dead-letter a message no attempt was made for (``poison: ...``, ``wrong_account``)."""
        now = _now_iso()
        headers = dict(message.properties.headers)
        headers[contract.SUBSCRIBER] = subscriber.id
        headers[contract.DEAD_LETTER_REASON] = reason
        headers[contract.DEAD_LETTERED_AT] = now
        headers.setdefault(contract.ATTEMPTS, 0)
        if message.properties.raw is not None:
            headers.update(_raw_properties_headers(message.properties.raw))
        await publisher.publish(
            DEAD_LETTER_EXCHANGE,
            subscriber.id,
            message.body,
            _moved_properties(message.properties, headers),
        )
        message.ack()
        kind = reason.split(":", 1)[0]  # "poison" or "wrong_account": a bounded label
        metrics.instruments(subscriber.id).dead_lettered(kind)
        note_dead_lettered(subscriber, message.properties.message_id, reason)
        log.error(
            "poison_message_dead_lettered" if kind == "poison" else "wrong_account_refused",
            subscriber=subscriber.id,
            event_id=message.properties.message_id,
            reason=reason,
        )
