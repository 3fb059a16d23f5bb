"""What can still be read of message properties that cannot be decoded, or not sent on.

A producer can send header values pika's decoder raises on (a timestamp past
year 9999, a table nested thousands deep) and RabbitMQ passes them on; others
decode but can never be encoded again (a double decoded as an integer over 64
bits) or are nested deep enough to exhaust the recursion limit in whatever walks
them next.  :func:`salvage` reads the property list itself: every property
outside the header table, and each header that decodes and can be carried on;
the headers left out are named with the reason, for the operator.

The value decoder is passed in (pika's, from :mod:`broker.pika_internals`) so
this module holds only the AMQP 0-9-1 layout, never pika's internals.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ValueDecoder = Callable[[bytes, int], tuple[Any, int]]
HeaderKey = str | bytes

# Deeper than any real header (x-death is 3 levels); every recursive walk of a
# header (pika's encoder, JSON output, redaction) stays far from the limit.
MAX_DEPTH = 64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Headers kept from one message at most; the rest are left out so a copy that
# adds the raw bytes beside them still fits in an AMQP frame (128 KiB).
SALVAGE_BUDGET = 64 * 1024
_NAMED_IN_REASON = 3
_KEY_CHARS = 64

# The basic class's properties in wire order, with their flag bits (AMQP 0-9-1).
_PROPERTIES: tuple[tuple[str, int, str], ...] = (
    ("content_type", 1 << 15, "short"),
    ("content_encoding", 1 << 14, "short"),
    ("headers", 1 << 13, "table"),
    ("delivery_mode", 1 << 12, "octet"),
    ("priority", 1 << 11, "octet"),
    ("correlation_id", 1 << 10, "short"),
    ("reply_to", 1 << 9, "short"),
    ("expiration", 1 << 8, "short"),
    ("message_id", 1 << 7, "short"),
    ("timestamp", 1 << 6, "longlong"),
    ("type", 1 << 5, "short"),
    ("user_id", 1 << 4, "short"),
    ("app_id", 1 << 3, "short"),
    ("cluster_id", 1 << 2, "short"),
)
PROPERTY_NAMES = tuple(name for name, _, _ in _PROPERTIES)

# Encoded size after the type octet, or None when a 32-bit length prefix follows.
_VALUE_SIZES: dict[bytes, int | None] = {
    b"t": 1, b"b": 1, b"B": 1, b"U": 2, b"u": 2, b"s": 2, b"I": 4, b"i": 4, b"f": 4,
    b"L": 8, b"l": 8, b"d": 8, b"T": 8, b"D": 5, b"V": 0,
    b"S": None, b"x": None, b"A": None, b"F": None,
}  # fmt: skip


def unfit(value: Any) -> str | None:
    """Why a decoded header value cannot be carried on, or None (no recursion: it may be deep)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        elif isinstance(item, int) and not _INT64_MIN <= item <= _INT64_MAX:
            return "integer over 64 bits"
        else:
            continue
        if depth >= MAX_DEPTH:
            return f"nested over {MAX_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def unfit_header(headers: Mapping[HeaderKey, Any]) -> bool:
    """Whether any header cannot be carried on (every delivery pays for this: kept cheap)."""
    for value in headers.values():
        if isinstance(value, str | bytes) or value is None:
            continue  # the usual headers, always fine
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                return True
        elif isinstance(value, dict | list) and unfit(value) is not None:
            return True
    return False


@dataclass(frozen=True)
class Salvage:
    """The properties read (None where unreadable; ``headers`` holds the headers kept)."""

    values: dict[str, Any]
    dropped: tuple[tuple[HeaderKey, str], ...] = ()

    def reason(self, error: str) -> str:
        """``error`` (what stopped the decoder), or which headers were left out and why."""
        if not self.dropped:
            return error
        named = ", ".join(
            f"{why} in header {_label(key)}" for key, why in self.dropped[:_NAMED_IN_REASON]
        )
        more = len(self.dropped) - _NAMED_IN_REASON
        return named + (f" and {more} more" if more > 0 else "")


def _label(key: HeaderKey) -> str:
    text = key if isinstance(key, str) else key.decode("utf-8", "backslashreplace")
    return repr(text[:_KEY_CHARS] + ("…" if len(text) > _KEY_CHARS else ""))


def _short_string(raw: bytes, offset: int) -> tuple[str | bytes, int]:
    end = offset + 1 + raw[offset]
    if end > len(raw):
        raise ValueError("short string runs past the end")
    value = raw[offset + 1 : end]
    try:
        return value.decode("utf-8"), end  # as pika does: text when it is UTF-8
    except UnicodeDecodeError:
        return value, end


def _value_span(raw: bytes, offset: int) -> int | None:
    """Bytes taken by the value at ``offset`` (type octet included); None if unknown."""
    kind = raw[offset : offset + 1]
    if kind not in _VALUE_SIZES:
        return None
    size = _VALUE_SIZES[kind]
    if size is None:
        size = 4 + struct.unpack_from(">I", raw, offset + 1)[0]
    return 1 + size


def _table(
    raw: bytes, offset: int, decode: ValueDecoder, dropped: list[tuple[HeaderKey, str]]
) -> tuple[dict[HeaderKey, Any], int]:
    size = struct.unpack_from(">I", raw, offset)[0]
    offset += 4
    end = offset + size
    if end > len(raw):
        raise ValueError("header table runs past the end")
    kept: dict[HeaderKey, Any] = {}
    budget = SALVAGE_BUDGET
    while offset < end:
        key, offset = _short_string(raw, offset)
        span = _value_span(raw, offset)
        if span is None or offset + span > end:
            dropped.append((key, "unknown field type (and every header after it)"))
            break
        why: str | None
        try:
            value, after = decode(raw, offset)
            why = unfit(value) if after == offset + span else "malformed value"
        except Exception as exc:  # whatever pika's decoder raises on these bytes
            why = error_name(exc)
        if why is None and span > budget:
            why = f"over the {SALVAGE_BUDGET // 1024} KiB kept per message"
        if why is None:
            kept[key] = value
            budget -= span
        else:
            dropped.append((key, why))
        offset += span
    return kept, end


def salvage(raw: bytes, decode: ValueDecoder) -> Salvage:
    """Read what can be read of a basic property list (flags first); never raises."""
    values: dict[str, Any] = dict.fromkeys(PROPERTY_NAMES)
    dropped: list[tuple[HeaderKey, str]] = []
    try:
        flags = struct.unpack_from(">H", raw, 0)[0]
        if flags & 1:
            return Salvage(values)  # a second flag word: no such basic property exists
        offset = 2
        for name, flag, kind in _PROPERTIES:
            if not flags & flag:
                continue
            if kind == "short":
                values[name], offset = _short_string(raw, offset)
            elif kind == "octet":
                values[name] = raw[offset]
                offset += 1
            elif kind == "longlong":
                values[name] = struct.unpack_from(">Q", raw, offset)[0]
                offset += 8
            else:
                values[name], offset = _table(raw, offset, decode, dropped)
    except (struct.error, IndexError, ValueError):
        pass  # the list is cut short: what was read before stands
    return Salvage(values, tuple(dropped))


def error_name(exc: BaseException) -> str:
    """``OverflowError``, ``struct.error``: the exception's type, as an operator can look it up."""
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
