"""A dead letter as the tools see it: the message plus what its headers and properties say.

A letter's properties may have been undecodable (a copy the broker dead-lettered
after a worker without the guarded decode kept dropping its connection): it then
carries what could be read and the raw bytes.  A copy the worker dead-lettered
for that reason has decodable properties and the raw bytes in a header.  Both
show the raw bytes the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from broker.properties import MessageProperties
from config.errors import PoisonMessageError
from config.topology import subscriber_of_queue
from wire import contract
from wire.envelope import format_timestamp
from wire.queued_event import read_event


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, with the worker's headers decoded."""

    queue: str
    event_id: str | None
    subscriber: str | None
    # The merchant the event belongs to (header x-webhook-account), if it says.
    account: str | None
    event_type: str | None
    attempts: int | None
    last_status: int | None
    last_error: str | None
    dead_lettered_at: datetime | None
    reason: str | None
    headers: dict[str, Any]
    body: bytes = field(repr=False)
    properties: dict[str, Any] = field(default_factory=dict)
    # Why this message's own properties could not be fully decoded (None: they could).
    undecodable: str | None = None
    # The undecodable property bytes: this message's own, or those the worker kept in
    # its copy's x-webhook-raw-properties header (possibly cut at RAW_PROPERTIES_CAP).
    raw_properties: bytes | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The fields of one ``list`` row, JSON-ready (``undecodable`` only when set)."""
        row = {
            "event_id": self.event_id,
            "subscriber": self.subscriber,
            "account": self.account,
            "event_type": self.event_type,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "dead_lettered_at": iso_utc(self.dead_lettered_at),
            "reason": self.reason,
            "queue": self.queue,
        }
        if self.undecodable is not None:
            row["undecodable"] = self.undecodable
        return row

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready: the summary, headers, properties and the body."""
        record = self.summary()
        record["headers"] = jsonable(self.headers)
        record["properties"] = jsonable(self.properties)
        if self.raw_properties is not None:
            record["raw_properties_base64"] = base64.b64encode(self.raw_properties).decode()
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
        return iso_utc(assume_utc(value))
    if isinstance(value, Decimal):
        return str(value)
    return value


def iso_utc(moment: datetime | None) -> str | None:
    """``moment`` in the wire's timestamp format (UTC, milliseconds); None stays None."""
    if moment is None:
        return None
    return format_timestamp(moment.astimezone(UTC))


def assume_utc(moment: datetime) -> datetime:
    """``moment``, taken as UTC when it carries no zone."""
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
        return assume_utc(value)
    text = _text(value)
    if text is None:
        return None
    try:
        return assume_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def _event_id(properties: MessageProperties, body: bytes) -> str | None:
    message_id = _text(properties.message_id)
    if message_id:
        return message_id
    # The worker's own reading (its fallback id included), so the id shown is the
    # X-Webhook-Id receivers saw; a message it could not deliver shows none.
    try:
        return read_event(properties, body, max_attempts=1 << 30).event_id
    except PoisonMessageError:
        return None


def _event_type(properties: MessageProperties, body: bytes) -> str | None:
    declared = _text(properties.type)
    if declared:
        return declared
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event = envelope.get("event") if isinstance(envelope, dict) else None
    return event if isinstance(event, str) else None


def _raw_from_header(value: Any) -> bytes | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_dead_letter(queue: str, properties: MessageProperties, body: bytes) -> DeadLetter:
    """A :class:`DeadLetter` from a message read from ``queue``.

    Messages the broker dead-lettered itself (work-queue delivery limit) carry no
    worker headers; their reason and time come from ``x-death`` (when their
    header table could be read).
    """
    headers = dict(properties.headers)
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
        account=_text(headers.get(contract.ACCOUNT)),
        event_type=_event_type(properties, body),
        attempts=_int(headers.get(contract.ATTEMPTS)),
        last_status=_int(headers.get(contract.LAST_STATUS)),
        last_error=_text(headers.get(contract.LAST_ERROR)),
        dead_lettered_at=dead_lettered_at,
        reason=reason,
        headers=headers,
        body=body,
        properties=properties.present(),
        undecodable=properties.undecodable,
        raw_properties=(
            properties.raw
            if properties.raw is not None
            else _raw_from_header(headers.get(contract.RAW_PROPERTIES))
        ),
    )
