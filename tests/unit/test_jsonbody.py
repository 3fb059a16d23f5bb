"""Golden vectors for config.jsonbody (expected bytes checked against node 20).

Every expected value here was confirmed with
``node -e 'console.log(JSON.stringify(JSON.parse(text)))'``; the property
tests in test_jsonbody_node.py check the same rules on generated values.
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
from config.jsonbody import canonicalize, decode_body, encode_body
from tests.support.page_samples import PAGE_TEXTS, PRODUCER_EVENTS

# --- numbers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"0"),
        (-7, b"-7"),
        (2**53 - 1, b"9007199254740991"),
        (-(2**53) + 1, b"-9007199254740991"),
        (2**53, b"9007199254740992"),
        (2**53 + 1, b"9007199254740992"),  # rounds to even, like Number("9007199254740993")
        (2**64, b"18446744073709552000"),
        (-(2**64), b"-18446744073709552000"),
        (10**21, b"1e+21"),
        (10**308, b"1e+308"),
        (2**1024 - 2**970 - 1, b"1.7976931348623157e+308"),  # rounds down to DBL_MAX
        (1250.0, b"1250"),
        (350.0, b"350"),
        (0.0, b"0"),
        (-0.0, b"0"),
        (-1.5, b"-1.5"),
        (0.1, b"0.1"),
        (0.1 + 0.2, b"0.30000000000000004"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (123456789012345680000.0, b"123456789012345680000"),
        (1e16, b"10000000000000000"),
        (1e15 + 0.5, b"1000000000000000.5"),
        (1.5e300, b"1.5e+300"),
        (-1e21, b"-1e+21"),
        (1e-7, b"1e-7"),
        (1.5e-7, b"1.5e-7"),
        (-1.5e-7, b"-1.5e-7"),
        (1e-6, b"0.000001"),
        (0.000001, b"0.000001"),
        (1.25e-6, b"0.00000125"),
        (1e-5, b"0.00001"),
        (1e-4, b"0.0001"),
        (123e-20, b"1.23e-18"),
        (5e-324, b"5e-324"),  # smallest subnormal
        (2.2250738585072014e-308, b"2.2250738585072014e-308"),
        (1.7976931348623157e308, b"1.7976931348623157e+308"),
    ],
)
def test_numbers_match_js_number_to_string(value: float, expected: bytes) -> None:
    assert encode_body(value) == expected


def test_bool_is_not_a_number() -> None:
    assert encode_body([True, False, None, 1, 1.0]) == b"[true,false,null,1,1]"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**1024, -(2**1024)])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(PayloadError):
        encode_body({"price": value})


# --- strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('quote " backslash \\ slash /', b'"quote \\" backslash \\\\ slash /"'),
        ("\b\f\n\r\t", b'"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x0b\x1f", b'"\\u0000\\u0001\\u000b\\u001f"'),
        ("\x7f", b'"\x7f"'),  # DEL stays raw
        ("\u2028\u2029", b'"\xe2\x80\xa8\xe2\x80\xa9"'),  # raw since ES2019
        ("রহিম", '"রহিম"'.encode()),
        ("😀", b'"\xf0\x9f\x98\x80"'),
        ("\ud83d\ude00", b'"\xf0\x9f\x98\x80"'),  # a pair as two code points is one char in JS
        ("\ud800", b'"\\ud800"'),  # lone high surrogate: escaped, lowercase
        ("\udfff", b'"\\udfff"'),
        ("x\udc00\ud800y", b'"x\\udc00\\ud800y"'),  # low-then-high is not a pair
        ("\ud800\ud83d\ude00", b'"\\ud800\xf0\x9f\x98\x80"'),
        ("\ud800\n\udc00", b'"\\ud800\\n\\udc00"'),
    ],
)
def test_strings_match_json_stringify(value: str, expected: bytes) -> None:
    assert encode_body(value) == expected


def test_surrogates_never_pair_across_strings() -> None:
    assert encode_body(["\ud800", "\udc00"]) == b'["\\ud800","\\udc00"]'
    assert encode_body({"\ud83d": "\ude00"}) == b'{"\\ud83d":"\\ude00"}'


# --- objects ----------------------------------------------------------------


def test_index_keys_first_in_numeric_order_then_insertion_order() -> None:
    value = {
        "b": 1,
        "4294967295": 2,  # 2**32 - 1 is not an array index
        "4294967294": 3,
        "10": 4,
        "2": 5,
        "01": 6,
        "-1": 7,
        "__proto__": 8,
        "a": 9,
        "0": 10,
        "1.0": 11,
        "\u0661": 12,  # ARABIC-INDIC DIGIT ONE
        "": 13,
        "9007199254740993": 14,
    }
    assert encode_body(value) == (
        b'{"0":10,"2":5,"10":4,"4294967294":3,"b":1,"4294967295":2,"01":6,"-1":7,'
        b'"__proto__":8,"a":9,"1.0":11,"\xd9\xa1":12,"":13,"9007199254740993":14}'
    )


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

PRODUCER_WIRE = {
    "order.created": (
        '{"event":"order.created","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250},'
        '{"productId":"678a1b2c3d4e5f6a7b8c9d1f","productName":"Phone Case - Black 📱",'
        '"quantity":2,"unitPrice":350}],"subtotal":1950,"status":"pending",'
        '"sourceType":"social","sourceName":"My Shop 🛍️ - Facebook Page",'
        '"createdAt":"2026-01-31T10:30:00.000Z"},"timestamp":"2026-01-31T10:30:01.234Z"}'
    ),
    "order.updated": (
        '{"event":"order.updated","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250},'
        '{"productId":"678a1b2c3d4e5f6a7b8c9d1f","productName":"Phone Case - Black 📱",'
        '"quantity":2,"unitPrice":350}],"subtotal":1950,"status":"shipped",'
        '"previousStatus":"confirmed","sourceType":"widget","sourceName":"chatsvia.iiniit.com",'
        '"createdAt":"2026-01-31T10:30:00.000Z","updatedAt":"2026-02-02T14:15:30.000Z"},'
        '"timestamp":"2026-02-02T14:15:30.456Z"}'
    ),
    "order.cancelled": (
        '{"event":"order.cancelled","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250}],'
        '"subtotal":1250,"status":"cancelled","previousStatus":"pending","sourceType":"social",'
        '"sourceName":"My Shop 🛍️ - Facebook Page","createdAt":"2026-01-31T10:30:00.000Z",'
        '"updatedAt":"2026-02-01T09:45:12.000Z"},"timestamp":"2026-02-01T09:45:12.789Z"}'
    ),
}


@pytest.mark.parametrize("event", sorted(PRODUCER_EVENTS))
def test_producer_events_golden_bytes(event: str) -> None:
    assert encode_body(PRODUCER_EVENTS[event]) == PRODUCER_WIRE[event].encode("utf-8")


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


def test_decode_keeps_first_position_and_last_value_of_duplicate_keys() -> None:
    assert canonicalize(b'{"b":1,"a":2,"b":3}') == b'{"b":3,"a":2}'
    assert canonicalize(b'{"b":1,"1":2,"1":3,"0":4}') == b'{"0":4,"1":3,"b":1}'


def test_canonicalize_normalises_layout_numbers_and_escapes() -> None:
    raw = (
        b' {\n "z" : 1.50 ,\t"1" : -0 , "e": 1E2, "s": "\\u00e9\\/\\ud83d\\ude00\\ud800",'
        b' "tiny": 1e-400, "big": 12345678901234567890 } \r\n'
    )
    assert canonicalize(raw) == (
        b'{"1":0,"z":1.5,"e":100,"s":"\xc3\xa9/\xf0\x9f\x98\x80\\ud800","tiny":0,'
        b'"big":12345678901234567000}'
    )


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
    assert canonicalize(b"[1.7976931348623157e308, 5e-324, 2e-324]") == (
        b"[1.7976931348623157e+308,5e-324,0]"
    )
