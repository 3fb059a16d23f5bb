"""One delivery attempt as the delivery log keeps it, and batches of them on the wire.

Workers build an :class:`AttemptRecord` for every HTTP attempt and publish them
in batches (one AMQP message, JSON) to the delivery log queue; the recorder
decodes the batches and writes the records to the store.  The worker trusts its
own records; the recorder validates every field (lengths fit the columns), so a
batch it cannot store is refused as a whole, once, instead of failing a write.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.errors import PayloadError

# The first bytes of an answer the log keeps (the worker reads no more than this).
EXCERPT_BYTES = 4096
# The response headers worth keeping: enough to tell who answered and why,
# never cookies or anything that authenticates.
HEADER_ALLOW_LIST = (
    "content-type",
    "content-length",
    "retry-after",
    "location",
    "server",
    "date",
    "x-request-id",
)
HEADER_VALUE_CHARS = 256
ERROR_CHARS = 500
# Event ids and types travel as AMQP short strings (wire.queued_event).
ID_CHARS = 255
BATCH_VERSION = 1

Disposition = Literal["delivered", "retry", "dead_lettered"]


class AttemptRecord(BaseModel):
    """What happened in one attempt to deliver one event to one endpoint.

    ``started_at`` tells two attempts with the same number apart: a replayed
    dead letter (or a redelivered message) starts again at attempt 1.  The
    event's ``body`` travels only with first attempts (the log keeps it once per
    event); ``response_excerpt`` has the endpoint's secrets masked.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1, max_length=ID_CHARS)
    account: str = Field(min_length=1, max_length=64)
    endpoint_id: str = Field(min_length=1, max_length=64)
    event_type: str = Field(max_length=ID_CHARS)
    attempt: int = Field(ge=1, le=1000)
    started_at: datetime
    ended_at: datetime
    duration_seconds: float = Field(ge=0)
    outcome: str = Field(max_length=32)
    status: int | None = Field(None, ge=0, le=999)
    error: str | None = Field(None, max_length=ERROR_CHARS)
    response_headers: dict[str, str] = Field(default_factory=dict)
    response_excerpt: bytes = Field(b"", max_length=EXCERPT_BYTES)
    disposition: Disposition
    # The retry's attempt number, or the dead letter's reason.
    next_attempt: int | None = None
    dead_letter_reason: str | None = Field(None, max_length=64)
    body: bytes | None = None


# A record in its wire form: what one entry of a batch's "records" holds.
WireRecord = dict[str, Any]


def encode_batch(records: Sequence[AttemptRecord]) -> bytes:
    """One AMQP message body holding ``records`` (bytes as base64, times as epoch seconds)."""
    return encode_wire_batch([to_wire(r) for r in records])


def encode_wire_batch(records: Sequence[WireRecord]) -> bytes:
    """One AMQP message body holding records already in their wire form (as the worker builds)."""
    return orjson.dumps({"v": BATCH_VERSION, "records": records})


def decode_batch(data: bytes) -> list[AttemptRecord]:
    """The records of one message; PayloadError (naming what is wrong) if any is invalid."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"attempt batch is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != BATCH_VERSION:
        raise PayloadError(f"attempt batch is not version {BATCH_VERSION}")
    items = document.get("records")
    if not isinstance(items, list):
        raise PayloadError("attempt batch has no list of records")
    records = []
    for index, item in enumerate(items):
        try:
            records.append(from_wire(item))
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise PayloadError(f"attempt batch record {index}: {reason[:300]}") from None
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise PayloadError(f"attempt batch record {index}: {reason}") from None
    return records


def to_wire(record: AttemptRecord) -> WireRecord:
    """``record`` in its wire form."""
    return {
        "event_id": record.event_id,
        "account": record.account,
        "endpoint_id": record.endpoint_id,
        "event_type": record.event_type,
        "attempt": record.attempt,
        "started_at": record.started_at.timestamp(),
        "ended_at": record.ended_at.timestamp(),
        "duration_seconds": record.duration_seconds,
        "outcome": record.outcome,
        "status": record.status,
        "error": record.error,
        "response_headers": record.response_headers,
        "response_excerpt": base64.b64encode(record.response_excerpt).decode("ascii"),
        "disposition": record.disposition,
        "next_attempt": record.next_attempt,
        "dead_letter_reason": record.dead_letter_reason,
        "body": None if record.body is None else base64.b64encode(record.body).decode("ascii"),
    }


def from_wire(item: Any) -> AttemptRecord:
    """The record one wire entry holds, validated (ValidationError, ValueError, TypeError...)."""
    if not isinstance(item, dict):
        raise TypeError("not an object")
    data = dict(item)
    for name in ("started_at", "ended_at"):
        data[name] = datetime.fromtimestamp(float(data[name]), UTC)
    data["response_excerpt"] = base64.b64decode(data.get("response_excerpt") or "", validate=True)
    body = data.get("body")
    data["body"] = None if body is None else base64.b64decode(body, validate=True)
    headers = data.get("response_headers") or {}
    if not isinstance(headers, dict) or not all(
        name in HEADER_ALLOW_LIST and isinstance(value, str) and len(value) <= HEADER_VALUE_CHARS
        for name, value in headers.items()
    ):
        raise ValueError("response_headers: only allow-listed names with short text values")
    return AttemptRecord.model_validate(data)
