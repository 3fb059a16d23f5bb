"""The webhook envelope ``{"event", "data", "timestamp"}`` and its validation.

The three order events of the product page are checked against typed models of
the page's payloads. The models only *validate*: what goes on the wire is the
caller's own ``data`` dict, unchanged in key order and content, so fields added
later by a producer reach receivers untouched.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
)

from config.errors import PayloadError
from wire.json_body import encode_body

# AMQP short strings (routing key, ``type``, ``message_id``) hold at most 255 bytes.
MAX_SHORTSTR_BYTES = 255

# Lowercase words joined by dots; a word may use '_' or '-' inside. No '*' or '#':
# those are binding wildcards, and an event type is a routing key, not a pattern.
EVENT_TYPE = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*(?:\.[a-z0-9]+(?:[_-][a-z0-9]+)*)*$")

# A merchant's account id is one topic word: it leads every routing key
# (``<account>.<event type>``), so it can hold no '.', '*' or '#'.
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# The event id travels as the X-Webhook-Id HTTP header: visible ASCII only.
EVENT_ID = re.compile(r"^[\x21-\x7e]+$")


def validate_event_type(event_type: object) -> str:
    """Return ``event_type`` if it is a valid routing key such as ``order.created``."""
    if not isinstance(event_type, str):
        raise PayloadError(f"event type must be a string, got {type(event_type).__name__}")
    if len(event_type.encode("utf-8")) > MAX_SHORTSTR_BYTES:
        raise PayloadError(f"event type is longer than {MAX_SHORTSTR_BYTES} bytes")
    if not EVENT_TYPE.match(event_type):
        raise PayloadError(
            f"event type {event_type!r} is invalid: use lowercase dot-separated words "
            "such as 'order.created' (no '*' or '#')"
        )
    return event_type


def validate_account(account: object) -> str:
    """Return ``account`` if it is a valid account id (letters, digits, '_', '-'; 1-64)."""
    if not isinstance(account, str) or not ACCOUNT_ID.match(account):
        raise PayloadError(
            f"account {account!r} is invalid: use 1-64 letters, digits, '_' or '-' "
            "(the platform's merchant id)"
        )
    return account


def validate_event_id(event_id: object) -> str:
    """Return ``event_id`` if it can be an AMQP ``message_id`` and an HTTP header value."""
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise PayloadError(
            f"event id {event_id!r} is invalid: use visible ASCII characters, no spaces"
        )
    if len(event_id) > MAX_SHORTSTR_BYTES:
        raise PayloadError(f"event id is longer than {MAX_SHORTSTR_BYTES} bytes")
    return event_id


def new_event_id() -> str:
    """A fresh, unique event id such as ``evt_3f0c...`` (32 hex digits)."""
    return f"evt_{uuid.uuid4().hex}"


def fallback_event_id(canonical_body: bytes) -> str:
    """The event id of a message that arrived without one, such as ``evt_9b1e...``.

    Derived from the canonical body, so retries and replays of such an event
    share one id receivers can deduplicate on.
    """
    return "evt_" + hashlib.sha256(canonical_body).hexdigest()[:32]


def format_timestamp(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with milliseconds, like ``2026-01-31T10:30:01.234Z``.

    Milliseconds are truncated, as JavaScript's ``Date.toISOString`` does. A naive
    datetime is refused: guessing its zone would silently shift the timestamp.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("format_timestamp needs a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# --- order payload models (validation only) -----------------------------------


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 2.0 and 2 are the same quantity on the wire
    # (JSON.stringify prints both as "2"), so an integral float is fine.
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


def _amount(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (JSON has no NaN or Infinity)")
    return value


def _iso_datetime(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time like 2026-01-31T10:30:00.000Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (e.g. a trailing 'Z')")
    return value


def _exactly(value: str, expected: str) -> str:
    if value != expected:
        raise ValueError(f"must be {expected!r}")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(ge=1)]
Amount = Annotated[float, BeforeValidator(_amount), Field(ge=0, allow_inf_nan=False)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
IsoDateTime = Annotated[StrictStr, AfterValidator(_iso_datetime)]


class _Payload(BaseModel):
    # extra="allow": producers may add fields before receivers know about them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


# Field names are the wire contract's camelCase on purpose.
class OrderItem(_Payload):
    """One line of an order."""

    productId: NonEmpty
    productName: NonEmpty
    quantity: WholeNumber
    unitPrice: Amount


class OrderData(_Payload):
    """``data`` of ``order.created``."""

    id: NonEmpty
    orderNumber: NonEmpty
    customerName: StrictStr
    customerPhone: StrictStr
    shippingAddress: StrictStr
    items: list[OrderItem] = Field(min_length=1)
    subtotal: Amount
    status: NonEmpty
    sourceType: NonEmpty
    sourceName: StrictStr
    createdAt: IsoDateTime


class OrderUpdatedData(OrderData):
    """``data`` of ``order.updated``: the order plus what its status was before."""

    previousStatus: NonEmpty
    updatedAt: IsoDateTime


class OrderCancelledData(OrderUpdatedData):
    """``data`` of ``order.cancelled``."""

    status: Annotated[StrictStr, AfterValidator(lambda v: _exactly(v, "cancelled"))]


ORDER_MODELS: dict[str, type[BaseModel]] = {
    "order.created": OrderData,
    "order.updated": OrderUpdatedData,
    "order.cancelled": OrderCancelledData,
}


def _location(loc: tuple[int | str, ...]) -> str:
    text = "data"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate_data(event_type: str, data: object) -> dict[str, Any]:
    """Check ``data`` for ``event_type`` and return it unchanged (the very same dict).

    Order events must match the page's payloads; any other event takes any JSON
    object. Whether every value is JSON-encodable is left to ``encode_body``.
    """
    if not isinstance(data, dict):
        raise PayloadError(f"{event_type} data must be a JSON object, got {type(data).__name__}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise PayloadError(f"{event_type} data: keys must be strings, got {bad_keys[0]!r}")
    model = ORDER_MODELS.get(event_type)
    if model is not None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            # Messages name the field but never echo the value (it may be personal data).
            problems = "; ".join(
                f"{event_type} {_location(tuple(e['loc']))}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise PayloadError(problems) from None
    return data


def build_envelope(event_type: str, data: dict[str, Any], *, now: datetime | None = None) -> bytes:
    """The exact webhook body for this event: ``{"event", "data", "timestamp"}`` as UTF-8.

    Raises PayloadError when the event type or data is invalid or not JSON-encodable.
    """
    validate_event_type(event_type)
    validate_data(event_type, data)
    moment = datetime.now(UTC) if now is None else now
    return encode_body({"event": event_type, "data": data, "timestamp": format_timestamp(moment)})
