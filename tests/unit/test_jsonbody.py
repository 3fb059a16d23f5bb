"""wire.json_body: golden vectors and error cases (no node needed).

The expected bytes live in tests/support/wire_vectors.py;
test_jsonbody_node.py re-checks every one of them against real
``JSON.stringify(JSON.parse(...))`` and then the same rules on generated values.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import sys
from collections import OrderedDict

import pytest

from config.errors import PayloadError
from tests.support.page_samples import PAGE_TEXTS, PRODUCER_EVENTS
from tests.support.wire_vectors import (
    CANONICAL,
    KEY_ORDER_VALUE,
    KEY_ORDER_WIRE,
    NUMBERS,
    PRODUCER_WIRE,
    STRINGS,
)
from wire.json_body import canonicalize, decode_body, encode_body

# --- numbers ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_numbers_match_js_number_to_string(value: float, expected: bytes) -> None:
    assert encode_body(value) == expected


def test_bool_is_not_a_number() -> None:
    assert encode_body([True, False, None, 1, 1.0]) == b"[true,false,null,1,1]"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**1024, -(2**1024)])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(PayloadError):
        encode_body({"price": value})


# --- strings ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), STRINGS)
def test_strings_match_json_stringify(value: str, expected: bytes) -> None:
    assert encode_body(value) == expected


def test_surrogates_never_pair_across_strings() -> None:
    assert encode_body(["\ud800", "\udc00"]) == b'["\\ud800","\\udc00"]'
    assert encode_body({"\ud83d": "\ude00"}) == b'{"\\ud83d":"\\ude00"}'


# --- objects ----------------------------------------------------------------


def test_index_keys_first_in_numeric_order_then_insertion_order() -> None:
    assert encode_body(KEY_ORDER_VALUE) == KEY_ORDER_WIRE


def test_no_whitespace_and_nested_structures() -> None:
    value = {"a": [1, {"b": (), "c": {}}, []], "d": ("x", None)}
    assert encode_body(value) == b'{"a":[1,{"b":[],"c":{}},[]],"d":["x",null]}'


def test_subclasses_are_encoded_by_their_value() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    value = OrderedDict([(Color.RED, Level.HIGH), ("f", Level.HIGH / 2)])
    assert encode_body(value) == b'{"red":3,"f":1.5}'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({1: "a"}, "keys must be str"),
        ({None: "a"}, "keys must be str"),
        ({"a": {1, 2}}, "set"),
        (b"bytes", "bytes"),
        (object(), "object"),
        ({"when": datetime.date(2026, 1, 31)}, "date"),
        (decimal.Decimal("1.5"), "Decimal"),
    ],
)
def test_unsupported_values_are_refused_by_name(value: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        encode_body(value)


def test_circular_and_too_deep_values_are_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(PayloadError, match="nested too deeply"):
        encode_body(loop)


# --- the product page's payloads ----------------------------------------------


@pytest.mark.parametrize("event", sorted(PRODUCER_EVENTS))
def test_producer_events_golden_bytes(event: str) -> None:
    assert encode_body(PRODUCER_EVENTS[event]) == PRODUCER_WIRE[event]


@pytest.mark.parametrize("event", sorted(PAGE_TEXTS))
def test_page_texts_canonicalize_to_compact_form(event: str) -> None:
    wire = canonicalize(PAGE_TEXTS[event])
    assert b"\n" not in wire and b": " not in wire
    assert wire.startswith(b'{"event":"' + event.encode() + b'","data":{"id":')
    assert canonicalize(wire) == wire
    # The page prints integer prices; ours come from floats and must not differ.
    assert b'"unitPrice":1250}' in wire
    assert decode_body(wire) == json.loads(PAGE_TEXTS[event])


# --- decode_body / canonicalize ------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), CANONICAL)
def test_canonicalize_golden(raw: bytes, expected: bytes) -> None:
    assert canonicalize(raw) == expected


def test_decode_accepts_top_level_scalars() -> None:
    assert decode_body(b'"x"') == "x"
    assert decode_body(b" 12 ") == 12
    assert decode_body(b"null") is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"a":"\xff"}', "not valid UTF-8"),
        (b'{"a":"\xed\xa0\x80"}', "not valid UTF-8"),  # CESU-style encoded surrogate
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # BOM
        (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),  # UTF-16 is not sniffed
        (b'{"a":NaN}', "NaN"),
        (b"[Infinity]", "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[1e400]", "overflows"),
        (b"[-1.8e308]", "overflows"),
        (b"[" + b"9" * 309 + b"]", "overflows"),
        (b"[" + b"1" * 5000 + b"]", "overflows"),
        (b"[1,]", "not valid JSON"),
        (b"{'a':1}", "not valid JSON"),
        (b'["\x01"]', "not valid JSON"),  # raw control character
        (b"[01]", "not valid JSON"),
        (b"[\xd9\xa1]", "not valid JSON"),  # Arabic-Indic digit
        (b"", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_decode_refuses_what_json_parse_would_not_reproduce(raw: bytes, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        decode_body(raw)


def test_decode_keeps_numbers_just_inside_the_double_range() -> None:
    dbl_max = str(int(sys.float_info.max))  # 309 digits, the largest finite JS number
    assert decode_body(dbl_max.encode()) == int(dbl_max)
    assert canonicalize(dbl_max.encode()) == b"1.7976931348623157e+308"
