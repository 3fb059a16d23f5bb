"""The red-team message properties in ``tests/fixtures/redteam/amqp/``, built byte by byte.

Each fixture is a content header's property list (flags first) as a producer in
another language could send it; pika cannot encode most of them.  This module
is how they were made: ``python -m tests.support.redteam_amqp`` rewrites the
files, and tests/unit/test_guarded_properties.py checks the files still match.
Every one carries ``x-webhook-account: acme`` and its own name as message id,
like every other test message.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redteam" / "amqp"
SUFFIX = ".props"

# pika.spec.BasicProperties flag bits (AMQP 0-9-1, class basic).
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_MESSAGE_ID = 1 << 7
_TYPE = 1 << 5


def short_string(text: bytes) -> bytes:
    return bytes([len(text)]) + text


def table(*entries: tuple[bytes, bytes]) -> bytes:
    """A field table from (key, encoded value with its type octet) pairs."""
    payload = b"".join(short_string(key) + value for key, value in entries)
    return struct.pack(">I", len(payload)) + payload


def long_string(text: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(text)) + text


def timestamp(seconds: int) -> bytes:
    return b"T" + struct.pack(">Q", seconds)


def double(value: float) -> bytes:
    return b"d" + struct.pack(">d", value)


def nested_tables(depth: int) -> bytes:
    """A field-table value holding a table holding a table ... ``depth`` levels."""
    value = b"F" + table()
    for _ in range(depth - 1):
        value = b"F" + table((b"a", value))
    return value


def nested_arrays(depth: int) -> bytes:
    """A field-array value holding an array holding an array ... ``depth`` levels."""
    value = b"A" + struct.pack(">I", 0)
    for _ in range(depth - 1):
        value = b"A" + struct.pack(">I", len(value)) + value
    return value


def properties(message_id: str, *extra_headers: tuple[bytes, bytes]) -> bytes:
    """content_type, headers (the account first, then ``extra_headers``), persistent, id, type."""
    flags = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID | _TYPE
    headers = table((b"x-webhook-account", long_string(b"acme")), *extra_headers)
    return (
        struct.pack(">H", flags)
        + short_string(b"application/json")
        + headers
        + bytes([2])
        + short_string(message_id.encode())
        + short_string(b"order.created")
    )


def fixtures() -> dict[str, bytes]:
    """Every fixture by name (the file name without its suffix)."""
    return {
        "timestamp-2pow63": properties("timestamp-2pow63", (b"x-sent-at", timestamp(2**63))),
        "timestamp-year-10000": properties(
            "timestamp-year-10000", (b"x-sent-at", timestamp(253402300800))
        ),
        "table-nested-5000-deep": properties(
            "table-nested-5000-deep", (b"x-nested", nested_tables(5000))
        ),
        "array-nested-5000-deep": properties(
            "array-nested-5000-deep", (b"x-nested", nested_arrays(5000))
        ),
        "table-nested-100-deep": properties(
            "table-nested-100-deep", (b"x-nested", nested_tables(100))
        ),
        "double-1e300": properties("double-1e300", (b"x-amount", double(1e300))),
        "double-infinity": properties("double-infinity", (b"x-amount", double(float("inf")))),
        "double-nan": properties("double-nan", (b"x-amount", double(float("nan")))),
        "header-key-not-utf8": properties(
            "header-key-not-utf8", (b"x-\xff\xfe", long_string(b"\xff not utf-8"))
        ),
    }


def write_all() -> None:
    """Rewrite every fixture file."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, data in fixtures().items():
        (FIXTURES / f"{name}{SUFFIX}").write_bytes(data)


def load(name: str) -> bytes:
    """One fixture's bytes, from its file."""
    return (FIXTURES / f"{name}{SUFFIX}").read_bytes()


if __name__ == "__main__":
    write_all()
    sys.exit(0)
