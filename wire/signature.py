"""The ``X-Webhook-Signature`` header: ``t=<unix ms>,v1=<hex HMAC-SHA256>``.

The MAC covers ``b"<t>." + body`` with the subscriber's secret, exactly what
the receiver code on the product page recomputes with node's
``createHmac('sha256', secret).update(`${t}.${JSON.stringify(body)}`)``.
The body must therefore be in ``wire.json_body.encode_body`` form.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Sequence

from config.errors import SignatureError

__all__ = ["now_ms", "sign", "verify"]

DEFAULT_TOLERANCE_SECONDS = 300.0
_HEX = frozenset("0123456789abcdef")
_MAX_HEADER_LEN = 4096  # a handful of v1 entries; anything longer is junk


def now_ms() -> int:
    """Current Unix time in whole milliseconds (the unit of ``t=``)."""
    return time.time_ns() // 1_000_000


_now_ms_func = now_ms  # verify's ``now_ms`` keyword shadows the function


def sign(secret: str | Sequence[str], body: bytes, timestamp_ms: int) -> str:
    """Return the header value ``t=<timestamp_ms>,v1=<hex hmac>`` for ``body``.

    During a secret rotation pass ``(current, previous)``: one ``v1`` entry per
    secret, in that order.  A receiver that checks every ``v1`` (``verify``
    here, Stripe-style verifiers) accepts either secret; the product page's
    verifier as published keeps only the *last* ``v1``, so it goes on working
    with the previous secret until the overlap ends.
    The secret is UTF-8 encoded, as node's ``createHmac`` does with a string.
    Raises ValueError for an empty secret or a negative / non-int timestamp.
    """
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets or not all(secrets):
        raise ValueError("webhook secret must not be empty")
    if type(timestamp_ms) is not int or timestamp_ms < 0:
        raise ValueError(f"timestamp_ms must be a non-negative int, got {timestamp_ms!r}")
    macs = ",".join(f"v1={_mac(s.encode('utf-8'), timestamp_ms, body)}" for s in secrets)
    return f"t={timestamp_ms},{macs}"


def verify(
    secrets: str | Sequence[str],
    body: bytes,
    header: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now_ms: int | None = None,
) -> int:
    """Check a signature header against ``body``; return its timestamp in ms.

    ``secrets`` may list several secrets (rotation): any one matching any
    ``v1`` entry of the header passes.  ``tolerance_seconds`` bounds the clock
    difference both ways (``math.inf`` disables the check).  Raises
    SignatureError saying why verification failed.
    """
    keys = _secret_keys(secrets)
    if not tolerance_seconds >= 0:  # also rejects NaN
        raise ValueError(f"tolerance_seconds must be >= 0, got {tolerance_seconds!r}")
    timestamp_ms, candidates = _parse_header(header)

    # Signature first: a "stale" or "future" error then means the sender
    # really holds the secret, which is what an operator needs to know.
    # Every pair is compared so timing does not reveal which secret matched.
    matched = False
    for key in keys:
        expected = _mac(key, timestamp_ms, body)
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature does not match the body with any configured secret")

    if not math.isinf(tolerance_seconds):
        current = _now_ms_func() if now_ms is None else now_ms
        skew_ms = current - timestamp_ms
        tolerance_ms = tolerance_seconds * 1000
        if skew_ms > tolerance_ms:
            raise SignatureError(
                f"signature timestamp is stale: {skew_ms / 1000:.3f}s old, "
                f"tolerance {tolerance_seconds:g}s"
            )
        if -skew_ms > tolerance_ms:
            raise SignatureError(
                f"signature timestamp is {-skew_ms / 1000:.3f}s in the future, "
                f"tolerance {tolerance_seconds:g}s"
            )
    return timestamp_ms


def _mac(key: bytes, timestamp_ms: int, body: bytes) -> str:
    # One-shot HMAC (OpenSSL underneath): no HMAC object per call.
    return hmac.digest(key, b"%d." % timestamp_ms + body, hashlib.sha256).hex()


def _secret_keys(secrets: str | Sequence[str]) -> list[bytes]:
    listed = [secrets] if isinstance(secrets, str) else list(secrets)
    if not listed:
        raise ValueError("no webhook secret configured")
    if not all(isinstance(s, str) and s for s in listed):
        raise ValueError("webhook secrets must be non-empty strings")
    return [s.encode("utf-8") for s in listed]


def _parse_header(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.strip():
        raise SignatureError("signature header is missing or empty")
    if len(header) > _MAX_HEADER_LEN:
        raise SignatureError(f"signature header is longer than {_MAX_HEADER_LEN} characters")
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            raise SignatureError(f"malformed signature header: element {part.strip()!r}")
        if name == "t":
            if timestamp is not None:
                raise SignatureError("malformed signature header: more than one t=")
            timestamp = value
        elif name == "v1":
            if len(value) != 64 or not _HEX.issuperset(value):
                raise SignatureError(
                    "malformed signature header: v1 must be 64 lowercase hex digits"
                )
            candidates.append(value)
        # Other schemes (v0, v2...) are ignored so new ones can be rolled out.
    if timestamp is None:
        raise SignatureError("malformed signature header: no t= timestamp")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 16:
        raise SignatureError(
            f"malformed signature header: t={timestamp[:20]!r} is not Unix milliseconds"
        )
    if not candidates:
        raise SignatureError("malformed signature header: no v1= signature")
    return int(timestamp), candidates
