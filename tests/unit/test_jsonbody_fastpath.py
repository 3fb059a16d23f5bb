"""The orjson fast path of wire.json_body and of wire.queued_event.read_event.

The fast path must be invisible: for every input ``decode_canonical(raw)``
returns exactly ``(decode_body(raw), canonicalize(raw))`` (same types, same
key order, same bytes) or raises what they raise, and ``read_event`` returns
the same event or the same poison reason as with the fast path switched off.
It must also actually be taken for our producer's bodies, or the optimisation
could silently disappear.  Real node checks the bodies it passes through
unchanged in test_jsonbody_node.py, which also holds the shared strategies.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import orjson
import pika
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.properties import MessageProperties
from config.errors import PayloadError, PoisonMessageError
from tests.support.wire_vectors import PRODUCER_WIRE
from tests.unit.test_jsonbody_node import fast_values, keys, serialisations, values
from wire import contract
from wire import queued_event as incoming
from wire.canonical_fast_path import decode_canonical, decode_if_canonical
from wire.envelope import build_envelope
from wire.json_body import canonicalize, decode_body, encode_body
from wire.queued_event import QueuedEvent, read_event
from wire.samples import sample_data

# Deterministic (no example database, fixed seed); ~15 s for the module.
FAST_SETTINGS = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- helpers ------------------------------------------------------------------


def _same_value(a: object, b: object) -> bool:
    """Equal *and* of the same types and key order (1 == 1.0 == True in Python).

    Iterative: the bodies compared here nest deeper than the recursion limit allows.
    """
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict) and isinstance(y, dict):
            if list(x) != list(y):
                return False
            stack.extend(zip(x.values(), y.values(), strict=True))
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, float):
            if repr(x) != repr(y):  # 0.0 vs -0.0
                return False
        elif x != y:
            return False
    return True


def _slow_path(raw: bytes) -> tuple[object, bytes]:
    # The code decode_canonical replaces, called at the same stack depth as
    # decode_canonical calls it: the recursion limits must bite at the same place.
    value = decode_body(raw)
    return value, encode_body(value)


def _outcome(decode: Any, raw: Any) -> tuple[str, object, object]:
    try:
        value, body = decode(raw)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("returned", value, body)


def _assert_fast_path_is_invisible(raw: Any) -> None:
    expected = _outcome(_slow_path, raw)
    actual = _outcome(decode_canonical, raw)
    assert actual[0] == expected[0], (raw, actual, expected)
    if expected[0] == "raised":
        assert actual == expected
    else:
        assert _same_value(actual[1], expected[1]), raw
        assert type(actual[2]) is bytes and actual[2] == expected[2], raw
    # The fast path on its own: never raises, and only says yes when the body
    # is its own canonical form.
    fast = decode_if_canonical(raw)
    if fast is not None:
        assert expected[0] == "returned" and expected[2] == raw, raw
        assert _same_value(fast, expected[1]), raw


def _short(raw: object) -> str:
    # Test ids: some bodies here are kilobytes of brackets.
    return repr(raw)[:60]


def _nested(depth: int, layout: str) -> bytes:
    if layout == "arrays":
        return b"[" * depth + b"]" * depth
    if layout == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * (depth // 2) + b"[]" + b"}]" * (depth // 2)


# --- the fast path is taken ------------------------------------------------------

ORDER_BODY = build_envelope("order.created", sample_data("order.created"))


@pytest.mark.parametrize("raw", [ORDER_BODY, *PRODUCER_WIRE.values()], ids=_short)
def test_producer_bodies_take_the_fast_path(raw: bytes) -> None:
    value, body = decode_canonical(raw)
    assert body is raw  # not a copy: nothing was re-encoded
    assert _same_value(value, decode_body(raw)) and canonicalize(raw) == raw


def test_read_event_sends_a_canonical_body_without_the_slow_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow(*_: object) -> object:
        raise AssertionError("slow path used for a canonical body")

    monkeypatch.setattr(incoming, "decode_body", slow)
    monkeypatch.setattr(incoming, "encode_body", slow)
    properties = pika.BasicProperties(message_id="evt_1", headers={contract.ATTEMPT: 1})
    event = read_event(MessageProperties.from_pika(properties), ORDER_BODY, max_attempts=3)
    assert event.body is ORDER_BODY
    assert event.event_type == "order.created"


@pytest.mark.parametrize(
    "data",
    [
        # What real order data looks like: none of it may trip the scan.
        {"createdAt": "2026-01-31T10:30:00.000Z", "at": "10:30:00.5", "v": "1.2.3"},
        {"url": "https://shop.example/p/12?x=1.5&e=2", "email": "e.x@example.com"},
        {"note": 'line 1\nline 2\t"quoted" back\\slash \x00 \x7f \u2028', "n": ""},
        {"name": "রহিম উদ্দিন 🛍️", "emoji": "👩\u200d💻", "bom": "\ufeff"},
        {"items": [{"qty": -3, "price": 1250}, {"qty": 0, "sku": "e1"}], "e": [True, None]},
        {"id": 9007199254740991, "min": -9007199254740991, "zip": "01000", "k-1": 1},
        {"nested": [[[[{"deep": [[{}]]}]]]], "empty": [], "obj": {}},
    ],
)
def test_typical_producer_content_takes_the_fast_path(data: dict[str, object]) -> None:
    raw = encode_body({"event": "order.created", "data": data, "timestamp": "2026-01-31"})
    assert decode_canonical(raw)[1] is raw
    _assert_fast_path_is_invisible(raw)


# --- where orjson and JSON.stringify disagree -------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b'{"a":1.0}', b'{"a":1}'),  # float formatting
        (b"[1.5e-7]", b"[1.5e-7]"),  # identical, refused anyway: any float is
        (b"[1e+16]", b"[10000000000000000]"),
        (b"[-1e+20]", b"[-100000000000000000000]"),
        (b"[-0.0]", b"[0]"),
        (b'{"a":[0,1000000000000000.0]}', b'{"a":[0,1000000000000000]}'),
        (b"[9007199254740993]", b"[9007199254740992]"),  # JS rounds beyond 2**53
        (b"[-9007199254740992]", b"[-9007199254740992]"),  # 2**53 itself: refused too
        (b"[18446744073709551615]", b"[18446744073709552000]"),
        (b'{"b":1,"0":2}', b'{"0":2,"b":1}'),  # JS puts array-index keys first
        (b'{"b":{"c":1,"10":2,"9":3}}', b'{"b":{"9":3,"10":2,"c":1}}'),
        (b'{"b":1,"4294967295":2}', b'{"b":1,"4294967295":2}'),  # not an index; refused
    ],
)
def test_orjson_fixed_points_that_js_writes_differently_take_the_slow_path(
    raw: bytes, canonical: bytes
) -> None:
    # orjson alone would keep every one of these: the scan is what refuses them.
    assert orjson.dumps(orjson.loads(raw)) == raw
    assert decode_if_canonical(raw) is None
    assert decode_canonical(raw)[1] == canonical == canonicalize(raw)
    _assert_fast_path_is_invisible(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # Differences orjson.dumps(orjson.loads(raw)) != raw catches by itself.
        b"[-0]",
        b'{"a":-0}',
        b'{"a":1,"a":2}',  # duplicate keys: last value, first position
        b'{"a":1,"b":2,"a":3}',
        b'["\\u00e9","\\/","\\u001F"]',  # escapes JS (and orjson) would not write
        b'["\\ud83d\\ude00"]',  # escaped pair: JS writes the raw character
        b'["\\ud800"]',  # lone surrogates: orjson refuses them
        b'{"\\udc00":1}',
        b'["\\ud800\\n\\udc00"]',
        b'{"a": 1}',
        b"[1, 2]",
        b'{"a":1}\n',
        b' {"a":1}',
        b"[1E5]",
        b"[1e400]",
        b"[" + b"9" * 400 + b"]",
        b"[NaN]",
        b"[Infinity]",
        b"[1,]",
        b"[01]",
        b'{"a":"\xff"}',
        b'{"a":"\xed\xa0\x80"}',  # CESU-encoded surrogate
        b"\xef\xbb\xbf{}",
        b'["\x01"]',
        b"",
        # Whole-document scalars always take the slow path.
        b"1",
        b"1.0",  # orjson keeps it, JS writes 1
        b"1e+16",
        b"-0.0",
        b"1.5",
        b"-0",
        b"1e21",
        b'"x"',
        b"true",
        b"null",
        b"{}",
        b"[]",
        b'{"":1}',  # empty key: refused by the scan (it looks like an index key)
        b'{"price":"1,250.00"}',  # refused by the scan: a false alarm, still right
    ],
    ids=_short,
)
def test_edge_cases_match_the_slow_path(raw: bytes) -> None:
    _assert_fast_path_is_invisible(raw)


@pytest.mark.parametrize(
    "raw", ["[1]", bytearray(b"[1]"), memoryview(b"[1]"), None, 1, [1]], ids=repr
)
def test_inputs_other_than_bytes_behave_as_before(raw: object) -> None:
    # orjson takes str/bytearray/memoryview; decode_body does not (or returns
    # a different type): the fast path must leave them alone.
    assert decode_if_canonical(raw) is None  # type: ignore[arg-type]
    _assert_fast_path_is_invisible(raw)


# --- generated bodies ---------------------------------------------------------


@FAST_SETTINGS
@given(fast_values | values)
@example({"b": 1, "10": 2, "2": 3, "01": 4, "-1": 5, "4294967294": 6, "4294967295": 7})
@example(["\ud83d\ude00", "\ud800", "x\udc00\ud800y", "\x00\x1f\x7f\u2028/", '\\"'])
@example([1250.0, -0.0, 1e21, 1e-7, 123e-20, 0.000001, 1e20, 5e-324, 2**64, 2**53 + 1])
@example({"a": 1.0, "b": [2**53 - 1, -(2**53) + 1, 2**53, -(2**53)]})
def test_generated_bodies_match_the_slow_path(value: object) -> None:
    for raw in serialisations(value):
        _assert_fast_path_is_invisible(raw)


# A canonical body with one edit: where the scan's reasoning about token
# boundaries would break first.
EDITS = [
    b" ", b"\n", b".", b".0", b"e", b"E5", b"e+1", b"e-7", b"0", b"1", b"-", b"-0", b"00",
    b"9" * 16, b"\\", b'\\"', b'"', b",", b":", b'":', b"[", b"]", b"{", b"}", b'"0":1,',
    b"\\u0041", b"\\ud800", b"\\udc00", b"\xff", b"\xed\xa0\x80", b"\xc3\xa9", b"true",
]  # fmt: skip


@st.composite
def edited_bodies(draw: st.DrawFn) -> bytes:
    raw = encode_body(draw(st.dictionaries(keys, fast_values, min_size=1, max_size=4)))
    start = draw(st.integers(0, len(raw)))
    end = draw(st.integers(start, min(len(raw), start + 2)))
    return raw[:start] + draw(st.sampled_from([b"", *EDITS])) + raw[end:]


@FAST_SETTINGS
@given(edited_bodies())
def test_edited_canonical_bodies_match_the_slow_path(raw: bytes) -> None:
    _assert_fast_path_is_invisible(raw)


@FAST_SETTINGS
@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["[{}]", '{{"a":{}}}', '[1,{},"x"]', '{{"a":[{}]}}']),
)
def test_every_number_token_matches_the_slow_path(token: str, layout: str) -> None:
    _assert_fast_path_is_invisible(layout.format(token).encode())


@settings(FAST_SETTINGS, max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "0", "1", "10"]), fast_values), max_size=5))
def test_duplicate_keys_match_the_slow_path(members: list[tuple[str, object]]) -> None:
    inner = b",".join(encode_body(k) + b":" + encode_body(v) for k, v in members)
    _assert_fast_path_is_invisible(b"{" + inner + b"}")


@pytest.mark.parametrize("layout", ["arrays", "objects", "mixed"])
@pytest.mark.parametrize(
    # orjson writes at most 254 levels and reads 1024; encode_body stops near
    # 500 and decode_body near 1000 (minus the stack already in use).
    "depth",
    [1, 100, 253, 254, 255, 256, 400, 480, 490, 495, 500, 510, 900, 980, 1000, 1024, 1025, 3000],
)
def test_deep_nesting_matches_the_slow_path(depth: int, layout: str) -> None:
    _assert_fast_path_is_invisible(_nested(depth, layout))


# --- read_event ---------------------------------------------------------------


def _read(properties: Any, body: bytes) -> tuple[str, object]:
    try:
        event = read_event(MessageProperties.from_pika(properties), body, max_attempts=3)
    except PoisonMessageError as exc:
        return ("poison", str(exc))
    assert type(event.body) is bytes
    return ("event", event)


def _assert_read_event_unchanged(properties: Any, body: bytes) -> QueuedEvent | None:
    with mock.patch.object(incoming, "decode_if_canonical", return_value=None):
        before = _read(properties, body)  # the code as it was: always the slow path
    after = _read(properties, body)
    assert after == before, body
    return after[1] if isinstance(after[1], QueuedEvent) else None


envelopes = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["order.created", "", 5, None, "a\nb", "\ud800"]),
        "data": fast_values | values | st.just({}),
    },
    optional={"timestamp": st.sampled_from(["2026-01-31T10:30:00.000Z", "soon", 5])},
)
properties = st.builds(
    pika.BasicProperties,
    message_id=st.sampled_from([None, "evt_1", "", "a\nb"]),
    headers=st.sampled_from(
        [
            None,
            {},
            {contract.ATTEMPT: 1},
            {contract.ATTEMPT: 3},
            {contract.ATTEMPT: 4},
            {contract.ATTEMPT: "2"},
        ]
    ),
)


@settings(FAST_SETTINGS, max_examples=200)
@given(envelopes, properties)
def test_read_event_is_unchanged_for_generated_messages(
    envelope: dict[str, object], props: Any
) -> None:
    for raw in serialisations(envelope):
        _assert_read_event_unchanged(props, raw)


@pytest.mark.parametrize(
    "body",
    [
        ORDER_BODY,
        b"{",
        b"[]",
        b'"x"',
        b'{"event":"a.b","data":{"x":1.5},"timestamp":"t"}',
        b'{"event":"a.b","data":{"1":1,"0":2},"timestamp":"t"}',
        b'{"data":' + _nested(600, "arrays") + b"}",  # decodes, cannot be re-encoded
        b'{"event":"a.b","data":{"x":' + _nested(600, "arrays") + b'},"timestamp":"t"}',
    ],
    ids=_short,
)
@pytest.mark.parametrize("headers", [None, {contract.ATTEMPT: 9}])
def test_read_event_reasons_are_unchanged(body: bytes, headers: dict[str, object] | None) -> None:
    _assert_read_event_unchanged(pika.BasicProperties(message_id="evt_1", headers=headers), body)


DEEP = _nested(600, "arrays")  # decodes, but is too deep for the recursive encoder


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        # A body both malformed and not re-encodable: the envelope and header
        # checks come first, as they did before the fast path, so the slow
        # path must not be folded into one decode-and-encode call.
        (b'{"data":' + DEEP + b"}", None, "body has no 'event' string"),
        (b'{"event":"a.b","data":' + DEEP + b',"timestamp":"t"}', None, "no 'data' object"),
        (b'{"event":"a.b","data":{"x":' + DEEP + b"}}", None, "no 'timestamp' string"),
        (
            b'{"event":"a.b","data":{"x":' + DEEP + b'},"timestamp":"t"}',
            {contract.ATTEMPT: 9},
            "1-3",
        ),
        (b'{"event":"a.b","data":{"x":' + DEEP + b'},"timestamp":"t"}', None, "re-encoded"),
    ],
    ids=["no-event", "no-data", "no-timestamp", "bad-attempt", "too-deep"],
)
def test_read_event_reports_re_encoding_last(
    body: bytes, headers: dict[str, object] | None, reason: str
) -> None:
    with pytest.raises(PoisonMessageError, match=reason):
        read_event(MessageProperties(headers=headers), body, max_attempts=3)


def test_read_event_fast_and_slow_give_the_same_event_id_without_message_id() -> None:
    # The fallback id hashes the canonical bytes: identical bytes, identical id.
    event = _assert_read_event_unchanged(pika.BasicProperties(), ORDER_BODY)
    assert event is not None and event.event_id.startswith("evt_")


def test_decode_canonical_raises_payload_error_like_the_slow_path() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_canonical(b"{")
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode_canonical(_nested(600, "arrays"))  # decodes, cannot be re-encoded
