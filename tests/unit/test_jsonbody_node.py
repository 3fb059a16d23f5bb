"""wire.json_body and wire.signature against real node.

For every generated value we ask one long-lived node process two things:

* fixed point: ``JSON.stringify(JSON.parse(encode_body(v))) === encode_body(v)``
  (what the receiver signs must be what we sent);
* same value: that string also equals what JS makes of ``json.dumps(v)``, so
  the encoder cannot "agree with itself" while changing a number, a
  surrogate or a key.

Bodies that ``decode_if_canonical`` (the orjson fast path) accepts as already
canonical must pass the same two checks.  The strategies and ``serialisations``
here are shared with tests/unit/test_jsonbody_fastpath.py.

Then the product page's own ``verifyWebhookSignature`` (copied verbatim into
tests/support/page_verifier.js) must accept our ``sign()`` output.
Needs ``node``: skipped without it, failed without it under ``CI``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.errors import PayloadError
from tests.support.node_bridge import NodeBridge, find_node_or_skip
from tests.support.page_samples import PAGE_TEXTS, PRODUCER_EVENTS
from tests.support.wire_vectors import (
    CANONICAL,
    KEY_ORDER_VALUE,
    KEY_ORDER_WIRE,
    NUMBERS,
    PRODUCER_WIRE,
    STRINGS,
)
from wire.canonical_fast_path import decode_if_canonical
from wire.json_body import canonicalize, encode_body
from wire.signature import now_ms, sign, verify

# On a generated failure hypothesis's pytest plugin imports libcst (to offer
# an @example patch), which trips a mypy_extensions DeprecationWarning; with
# filterwarnings=error that turns the real failure into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

# Deterministic (no example database, fixed seed) and sized so the whole
# module stays within a few seconds: each example is one or two pipe round trips.
NODE_SETTINGS = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def node() -> Iterator[NodeBridge]:
    bridge = NodeBridge(find_node_or_skip())
    try:
        yield bridge
    finally:
        bridge.close()


# --- strategies ---------------------------------------------------------------

INDEX_LIKE_KEYS = [
    "0", "1", "2", "7", "10", "99", "01", "00", "-1", "-0", "+1", "1.0", "1e3", " 1", "1 ",
    "4294967294", "4294967295", "4294967296", "9007199254740993", "18446744073709551616",
    "\u0661", "\uff11", "", "__proto__", "constructor", "toString", "length",
]  # fmt: skip

# Characters from every class the encoder treats differently.  A plain
# string alphabet is several times cheaper to draw from than a one_of of
# character strategies, and generation, not node, is the cost per example.
ALPHABET = (
    '"\\/\b\f\n\r\t\x00\x01\x1f\x7f\x80\xa0\xe9\u2028\u2029\ufeff\ufffd'
    "\ud83d\ude00\ud800\udbff\udc00\udfff"  # surrogates: adjacent high+low pair up
    "রহিম উদ্দিন🛍️\u200d👩😀一\U0010ffffaZ09-_.:{}[],<>"
)
strings = st.text(ALPHABET, max_size=8) | st.text(st.characters(exclude_categories=[]), max_size=8)
keys = st.sampled_from(INDEX_LIKE_KEYS) | strings


def _finite_float(bits: int) -> float:
    if (bits >> 52) & 0x7FF == 0x7FF:  # inf/NaN exponent: flip a bit instead of filtering
        bits ^= 1 << 62
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    # Uniform over bit patterns: every exponent, subnormals included.
    | st.integers(0, 2**64 - 1).map(_finite_float)
    | st.integers(-330, 308).map(lambda e: float(f"1e{e}"))  # notation switch points
    | st.integers(-(2**31), 2**31)
    | st.integers(2**53 - 4, 2**53 + 4)  # where ints stop being exact doubles
    | st.integers(-(2**1023), 2**1023)  # beyond 2**53: printed as the nearest double
    | st.integers(2**1024 - 2**971, 2**1024 - 2**970 - 1)  # still rounds down to DBL_MAX
)
scalars = st.none() | st.booleans() | numbers | strings
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=10,
)
# What the fast path can accept (no floats, no ints JS would round), so most
# of these come out of encode_body as bodies it proves canonical; the keys
# and strings still include index-like keys, escapes and surrogates.
fast_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=10,
)


def serialisations(value: object) -> list[bytes]:
    """``value`` written the ways a producer might (canonical or not), as UTF-8.

    Wrapped in an object and an array too: a top-level scalar never takes the
    fast path.  Writers that refuse ``value`` (orjson: lone surrogates, ints
    beyond 64 bits; encode_body: ints beyond a double) are left out.
    """
    out: list[bytes] = []
    for doc in (value, {"event": "order.created", "data": value}, [value]):
        for write in (
            encode_body,
            orjson.dumps,
            lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
            lambda v: json.dumps(v, separators=(",", ":")),
            lambda v: json.dumps(v),  # ", " and ": "
            lambda v: json.dumps(v, indent=1, ensure_ascii=False),
        ):
            try:
                text = write(doc)
                out.append(text if isinstance(text, bytes) else text.encode("utf-8"))
            except (PayloadError, TypeError, UnicodeEncodeError):
                continue  # TypeError is orjson.JSONEncodeError
    return out


# --- encode_body --------------------------------------------------------------


def _python_text(value: object) -> str:
    # json.dumps writes exact ints, repr floats, every non-ASCII char (and
    # each surrogate) as \uXXXX and keys in insertion order: the same value
    # as ours, laid out differently, for node to re-stringify independently.
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def _assert_node_agrees(node: NodeBridge, value: object) -> None:
    body = encode_body(value)
    reply = node.check(body, _python_text(value))
    assert reply["fixed"], f"JS re-stringifies {body!r} as {reply['again']!r}"
    assert reply["same"], f"we wrote {body!r}, JS writes {reply['expected']!r}"


GOLDEN = [
    *NUMBERS,
    *STRINGS,
    (KEY_ORDER_VALUE, KEY_ORDER_WIRE),
    *((PRODUCER_EVENTS[event], wire) for event, wire in PRODUCER_WIRE.items()),
]


@pytest.mark.parametrize(("value", "expected"), GOLDEN)
def test_golden_vectors_are_what_node_writes(
    node: NodeBridge, value: object, expected: bytes
) -> None:
    reply = node.check(expected, _python_text(value))
    assert reply["fixed"] and reply["same"], f"node writes {reply['expected']!r}"


@pytest.mark.parametrize(("raw", "expected"), CANONICAL)
def test_golden_canonical_forms_are_what_node_writes(
    node: NodeBridge, raw: bytes, expected: bytes
) -> None:
    assert node.canon(raw) == expected


@NODE_SETTINGS
@given(values)
@example({"b": 1, "10": 2, "2": 3, "01": 4, "-1": 5, "4294967294": 6, "4294967295": 7})
@example(["\ud83d\ude00", "\ud800", "x\udc00\ud800y", "\x00\x1f\x7f\u2028/"])
@example([1250.0, -0.0, 1e21, 1e-7, 123e-20, 0.000001, 1e20, 5e-324, 2**64, 2**53 + 1])
def test_json_stringify_reproduces_encoded_values(node: NodeBridge, value: object) -> None:
    _assert_node_agrees(node, value)


# --- decode_body / canonicalize -------------------------------------------------


@settings(NODE_SETTINGS, max_examples=300)
@given(values, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_canonicalize_matches_json_parse_then_stringify(
    node: NodeBridge, value: object, indent: int | str | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, allow_nan=False)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written raw: not UTF-8 at all
        raw = json.dumps(value, indent=indent, allow_nan=False).encode("ascii")
    assert canonicalize(raw) == node.canon(raw)


@pytest.mark.parametrize("event", sorted(PAGE_TEXTS))
def test_page_texts_canonicalize_like_node(node: NodeBridge, event: str) -> None:
    assert canonicalize(PAGE_TEXTS[event]) == node.canon(PAGE_TEXTS[event])


@pytest.mark.parametrize(
    "raw", [b"[1,]", b"{'a':1}", b"[01]", b'["\x01"]', b"[NaN]", b"[Infinity]", b"\xef\xbb\xbf{}"]
)
def test_texts_we_refuse_as_invalid_node_refuses_too(node: NodeBridge, raw: bytes) -> None:
    with pytest.raises(PayloadError):
        canonicalize(raw)
    assert str(node.canon(raw)).startswith("SyntaxError")


@pytest.mark.parametrize("raw", [b"[1e400]", b"[-1e400]", b"[" + b"9" * 400 + b"]"])
def test_overflowing_numbers_are_refused_where_node_would_write_null(
    node: NodeBridge, raw: bytes
) -> None:
    # JSON.parse gives +-Infinity, JSON.stringify writes null: the receiver
    # would silently see a different value, so we refuse instead.
    assert node.canon(raw) == b"[null]"
    with pytest.raises(PayloadError, match="overflows"):
        canonicalize(raw)


# --- the fast path -------------------------------------------------------------


@settings(NODE_SETTINGS, max_examples=300)
@given(fast_values | values)
@example({"s": 'q" b\\ \n\t\x00\x1f\x7f\u2028 é 😀 রহিম', "n": [-(2**53) + 1, 0, -1]})
@example({"at": "2026-01-31T10:30:00.000Z", "price": "1,250.00", "e": "e-1", "k": {"": 1}})
def test_fast_path_bodies_are_what_json_stringify_writes(node: NodeBridge, value: object) -> None:
    # Whatever the fast path passes through unchanged must be a fixed point in
    # real JS *and* hold the value JS reads from json.dumps of what we decoded.
    for raw in serialisations(value):
        decoded = decode_if_canonical(raw)
        if decoded is None:
            continue  # slow path: covered by the canonicalize tests above
        reply = node.check(raw, _python_text(decoded))
        assert reply["fixed"], f"JS re-stringifies {raw!r} as {reply['again']!r}"
        assert reply["same"], f"fast path kept {raw!r}, JS writes {reply['expected']!r}"


@pytest.mark.parametrize("event", sorted(PRODUCER_WIRE))
def test_fast_path_keeps_producer_bodies_that_node_agrees_with(
    node: NodeBridge, event: str
) -> None:
    raw = PRODUCER_WIRE[event]
    assert decode_if_canonical(raw) is not None
    assert node.canon(raw) == raw


# --- the product page's verifier ------------------------------------------------

SECRET = "whsec_test_7c2f43f0"
secrets = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@settings(NODE_SETTINGS, max_examples=100)
@given(values, secrets, st.integers(0, 2**45))
def test_page_verifier_accepts_our_signature(
    node: NodeBridge, value: object, secret: str, timestamp_ms: int
) -> None:
    body = encode_body({"event": "order.created", "data": value})
    header = sign(secret, body, timestamp_ms)
    assert node.page_verify(body, header, secret) is True
    assert node.page_verify(body, header, secret + "x") is False
    assert verify(secret, body, header, now_ms=timestamp_ms) == timestamp_ms


@pytest.mark.parametrize("event", sorted(PRODUCER_EVENTS))
def test_page_verifier_on_producer_events(node: NodeBridge, event: str) -> None:
    body = encode_body(PRODUCER_EVENTS[event])
    header = sign(SECRET, body, 1706698200123)
    assert node.page_verify(body, header, SECRET) is True
    assert node.page_verify(body, header, "whsec_wrong") is False
    tampered = body.replace(b'"quantity":1', b'"quantity":9')
    assert node.page_verify(tampered, header, SECRET) is False


def test_page_verifier_rejects_python_json_dumps_body(node: NodeBridge) -> None:
    # Why jsonbody exists: signing json.dumps output fails on the merchant's side.
    body = json.dumps(PRODUCER_EVENTS["order.created"], separators=(",", ":")).encode()
    header = sign(SECRET, body, 1706698200123)
    assert node.page_verify(body, header, SECRET) is False


def test_page_verifier_only_checks_the_last_v1(node: NodeBridge) -> None:
    # The page keeps the last "v1=" it sees; during a sender-side rotation the
    # signature with the secret the merchant has must come last.
    body = encode_body(PRODUCER_EVENTS["order.cancelled"])
    good = sign(SECRET, body, 1706698200123)
    other = sign("whsec_other", body, 1706698200123).split(",")[1]
    assert node.page_verify(body, f"{good},{other}", SECRET) is False
    assert node.page_verify(body, f"t=1706698200123,{other},{good.split(',')[1]}", SECRET) is True
    # ...while our verify() accepts any of them.
    assert verify(SECRET, body, f"{good},{other}", now_ms=1706698200123) == 1706698200123


def test_page_verifier_throws_on_a_short_signature(node: NodeBridge) -> None:
    # timingSafeEqual throws on a length mismatch: merchants get a 500, not a 401.
    body = encode_body({"event": "order.created"})
    outcome = node.page_verify(body, "t=1706698200123,v1=abc", SECRET)
    assert isinstance(outcome, str) and outcome.startswith("RangeError")


def test_rotation_signatures_as_the_page_verifier_and_ours_see_them(node: NodeBridge) -> None:
    """During a rotation each delivery carries one v1 per secret, current first.

    The page's verifier keeps only the last v1 (it builds a dict), so it accepts
    the previous secret until the overlap ends, and the current one after; a
    verifier that checks every v1 accepts either secret throughout.
    """
    body = encode_body({"event": "order.created", "data": {"id": "r1"}, "timestamp": "t"})
    now = now_ms()
    during = sign(("whsec_new", "whsec_old"), body, now)
    assert during.count("v1=") == 2
    assert node.page_verify(body, during, "whsec_old") is True
    assert node.page_verify(body, during, "whsec_new") is False
    assert verify("whsec_new", body, during, now_ms=now) == now
    assert verify("whsec_old", body, during, now_ms=now) == now
    after = sign("whsec_new", body, now)
    assert node.page_verify(body, after, "whsec_new") is True
    assert node.page_verify(body, after, "whsec_old") is False
