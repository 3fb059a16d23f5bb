"""wire.signature: header format, golden vectors, verification failures."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

import pytest

from config.errors import SignatureError
from tests.support.page_samples import ORDER_CREATED_TEXT, PRODUCER_EVENTS
from wire.json_body import canonicalize, encode_body
from wire.signature import now_ms, sign, verify

SECRET = "whsec_test_7c2f43f0"
T = 1706698200123  # the timestamp shown in the product page's header example
BODY = encode_body(PRODUCER_EVENTS["order.created"])

# Made once with node 20, the way the page's receiver computes it:
#   const body = JSON.parse(fs.readFileSync(file, "utf8"));
#   crypto.createHmac("sha256", secret)
#         .update(`1706698200123.${JSON.stringify(body)}`).digest("hex")
# over canonicalize(ORDER_CREATED_TEXT) and encode_body(PRODUCER_EVENTS["order.created"]).
NODE_PAGE_SAMPLE_V1 = "e6fb612dbf9abd215f6be5972ebd8d7fb6248b7e704dfbd404fec8b4fe39ab6c"
NODE_PRODUCER_V1 = "0f5c2a56dfe8f5465a18ddf8eba746cc6b2441af8efe5681ce969b1b586f6223"
NODE_PRODUCER_UNICODE_SECRET_V1 = "d302eb265681e59b0b9d47283fc287d617306a93aeead59dcce5dc01f9195766"
UNICODE_SECRET = "গোপন-🔑-secret"


# --- sign -------------------------------------------------------------------


def test_sign_matches_vectors_made_by_node() -> None:
    page_body = canonicalize(ORDER_CREATED_TEXT)
    assert sign(SECRET, page_body, T) == f"t={T},v1={NODE_PAGE_SAMPLE_V1}"
    assert sign(SECRET, BODY, T) == f"t={T},v1={NODE_PRODUCER_V1}"
    # node's createHmac(string) keys with the UTF-8 bytes of the secret
    assert sign(UNICODE_SECRET, BODY, T) == f"t={T},v1={NODE_PRODUCER_UNICODE_SECRET_V1}"


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"%d.%s" % (T, BODY), hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"


@pytest.mark.parametrize(
    ("secret", "timestamp"),
    [("", T), (SECRET, -1), (SECRET, True), (SECRET, 1.5), (SECRET, "1706698200123")],
)
def test_sign_refuses_bad_arguments(secret: str, timestamp: object) -> None:
    with pytest.raises(ValueError):
        sign(secret, BODY, timestamp)  # type: ignore[arg-type]


def test_now_ms_is_unix_milliseconds() -> None:
    assert abs(now_ms() - time.time() * 1000) < 1000


# --- verify: success ------------------------------------------------------------


def test_round_trip_returns_the_timestamp() -> None:
    assert verify(SECRET, BODY, sign(SECRET, BODY, T), now_ms=T) == T
    assert verify(SECRET, BODY, sign(SECRET, BODY, T), now_ms=T + 299_999) == T


def test_round_trip_against_the_real_clock() -> None:
    stamp = now_ms()
    assert verify(SECRET, BODY, sign(SECRET, BODY, stamp)) == stamp


def test_rotation_any_configured_secret_may_match() -> None:
    header = sign("whsec_old", BODY, T)
    assert verify(["whsec_new", "whsec_old"], BODY, header, now_ms=T) == T
    assert verify(("whsec_old",), BODY, header, now_ms=T) == T


def test_any_v1_entry_may_match() -> None:
    ours = sign(SECRET, BODY, T).split(",")[1]
    other = sign("whsec_other", BODY, T).split(",")[1]
    assert verify(SECRET, BODY, f"t={T},{other},{ours}", now_ms=T) == T
    assert verify(SECRET, BODY, f"{ours},t={T},{other}", now_ms=T) == T


def test_unknown_schemes_and_spaces_are_tolerated() -> None:
    v1 = sign(SECRET, BODY, T).split(",")[1]
    assert verify(SECRET, BODY, f" t={T} , v0=legacy, {v1} ,v2=future", now_ms=T) == T


def test_tolerance_bounds_both_directions_inclusively() -> None:
    header = sign(SECRET, BODY, T)
    assert verify(SECRET, BODY, header, now_ms=T + 300_000) == T
    assert verify(SECRET, BODY, header, now_ms=T - 300_000) == T
    assert verify(SECRET, BODY, header, tolerance_seconds=0, now_ms=T) == T
    assert verify(SECRET, BODY, header, tolerance_seconds=math.inf, now_ms=0) == T


# --- verify: failures -------------------------------------------------------------


def test_stale_signature_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    with pytest.raises(SignatureError, match=r"stale: 300\.001s old, tolerance 300s"):
        verify(SECRET, BODY, header, now_ms=T + 300_001)
    with pytest.raises(SignatureError, match="stale"):
        verify(SECRET, BODY, header, tolerance_seconds=5, now_ms=T + 5_001)


def test_future_signature_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    with pytest.raises(SignatureError, match=r"300\.001s in the future"):
        verify(SECRET, BODY, header, now_ms=T - 300_001)


def test_wrong_secret_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    with pytest.raises(SignatureError, match="does not match"):
        verify(["whsec_a", "whsec_b"], BODY, header, now_ms=T)


def test_a_bad_signature_is_reported_before_a_stale_one() -> None:
    header = sign("whsec_attacker", BODY, T)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, header, now_ms=T + 10**9)


def test_tampered_body_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    for tampered in (
        BODY.replace(b'"quantity":1', b'"quantity":2'),
        BODY + b" ",
        BODY[:-1],
        # Same value, other bytes: still a mismatch, which is why the body is
        # signed in exactly the form the receiver re-creates.
        BODY.replace(b'"unitPrice":1250', b'"unitPrice":1250.0'),
    ):
        with pytest.raises(SignatureError, match="does not match"):
            verify(SECRET, tampered, header, now_ms=T)


def test_replayed_signature_with_a_new_timestamp_is_refused() -> None:
    v1 = sign(SECRET, BODY, T).split(",")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, f"t={T + 1000},{v1}", now_ms=T + 1000)


GOOD_V1 = "v1=" + "ab" * 32


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing or empty"),
        ("   ", "missing or empty"),
        ("garbage", "element 'garbage'"),
        (f"t={T};{GOOD_V1}", "not Unix milliseconds"),
        (f"t={T},,{GOOD_V1}", "element ''"),
        (f"={T},{GOOD_V1}", "element"),
        (GOOD_V1, "no t= timestamp"),
        (f"t={T}", "no v1= signature"),
        (f"t={T},v0=abc", "no v1= signature"),
        (f"t={T},t={T},{GOOD_V1}", "more than one t="),
        (f"t=abc,{GOOD_V1}", "not Unix milliseconds"),
        (f"t=-5,{GOOD_V1}", "not Unix milliseconds"),
        (f"t=1.5,{GOOD_V1}", "not Unix milliseconds"),
        (f"t=,{GOOD_V1}", "not Unix milliseconds"),
        (f"t=\u0661\u0662,{GOOD_V1}", "not Unix milliseconds"),
        (f"t={'9' * 17},{GOOD_V1}", "not Unix milliseconds"),
        (f"t={T},v1=abc", "64 lowercase hex"),
        (f"t={T},v1={'AB' * 32}", "64 lowercase hex"),
        (f"t={T},v1={'zz' * 32}", "64 lowercase hex"),
        (f"t={T},v1={'ab' * 33}", "64 lowercase hex"),
        (f"t={T}," + ",".join([GOOD_V1] * 100), "longer than 4096"),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(header: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(SECRET, BODY, header, now_ms=T)


def test_verify_refuses_bad_configuration() -> None:
    header = sign(SECRET, BODY, T)
    with pytest.raises(ValueError, match="no webhook secret"):
        verify([], BODY, header, now_ms=T)
    with pytest.raises(ValueError, match="non-empty"):
        verify([SECRET, ""], BODY, header, now_ms=T)
    with pytest.raises(ValueError, match="tolerance"):
        verify(SECRET, BODY, header, tolerance_seconds=-1, now_ms=T)
    with pytest.raises(ValueError, match="tolerance"):
        verify(SECRET, BODY, header, tolerance_seconds=math.nan, now_ms=T)
