"""Proving cheaply that a body is already canonical (the form ``wire.json_body`` writes).

Almost every body the worker sees was written by our own producer with
``encode_body``, so it is already canonical and only needs proving so.  ``orjson`` parses and
re-serialises it in a fraction of the pure-Python cost, and when its output
is byte-identical to the input, the input is its own canonical form, *provided*
it holds nothing on which ``orjson.dumps`` and ``JSON.stringify`` disagree.
Those are ruled out conservatively (a false alarm only costs the slow path):

* floats (orjson writes ``1.0``, ``1e+16``, ``-0.0``; JS ``1``,
  ``10000000000000000``, ``0``): every float orjson writes has a ``.`` or an
  ``e`` right after its digits, so a byte scan refuses any such number token;
* integers from 2**53 on (exact in orjson, rounded in JS):
  ``OPT_STRICT_INTEGER`` makes ``orjson.dumps`` refuse them;
* all-digit object keys (JS moves array-index keys to the front): the scan
  refuses them;
* strings: orjson escapes exactly the 34 characters JS escapes, the same way
  (checked for every code point against node and ``encode_basestring``);
  lone surrogates, escaped or CESU-encoded, make orjson raise;
* the rest is a byte difference the comparison catches: ``-0``, escapes
  neither would write (``\\u00e9``, ``\\/``), whitespace, duplicate keys.

Only documents that are an object or an array qualify (no bare number
tokens), and orjson writes at most 254 levels of nesting, where
``decode_body`` and ``encode_body`` stop near 1000 and 500 (unless the caller
is already hundreds of frames deep).  What is left is dicts, lists, str, int
within 2**53, bool and None, on which ``orjson.loads`` gives exactly what
``decode_body`` gives and ``encode_body`` writes exactly what ``orjson.dumps``
writes.  tests/unit/test_jsonbody_fastpath.py checks both against the slow
path, and test_jsonbody_node.py the kept bodies against real node.
"""

from __future__ import annotations

from typing import Any

import orjson

from wire.json_body import decode_body, encode_body

__all__ = ["decode_canonical", "decode_if_canonical"]

# decode_if_canonical's scan: see there.
_SCAN_FOLD = bytes.maketrans(b"[.E", b",ee")
_SCAN_DELETE = b"0123456789-"


def decode_if_canonical(raw: bytes) -> dict[str, Any] | list[Any] | None:
    """``decode_body(raw)`` if ``raw`` is provably canonical already, else None.

    "Canonical" meaning ``canonicalize(raw) == raw``, so the caller can send
    ``raw`` itself.  None says nothing about ``raw`` (it may still be valid,
    even canonical): use ``decode_body``/``encode_body`` then.  Never raises.
    See the module docstring for why a non-None answer is exact.
    """
    # bytes only: orjson also takes str/bytearray/memoryview, which
    # decode_body refuses or which would hand the caller back a non-bytes body.
    # Scalars (`1.0`, `"x"`) are left to the slow path: no need to reason
    # about number tokens that have no delimiter in front of them.
    if type(raw) is not bytes or raw[:1] not in (b"{", b"["):
        return None
    # The scan, in C-speed passes (a regex took ~14 µs on an order event).
    # In compact JSON a number token follows `[`, `,` or `":`; with digits and
    # '-' deleted, a float becomes `[.`/`,.`/`":.` (or the same with 'e') and
    # an all-digit key `"":`.  Folding '[' into ',' and '.'/'E' into 'e'
    # leaves three substrings to look for.  String contents can produce them
    # too ("1,000.50", `"":` for an empty key); that only costs the slow path.
    folded = raw.translate(_SCAN_FOLD, _SCAN_DELETE)
    if b",e" in folded or b'":e' in folded or b'"":' in folded:
        return None
    try:
        value = orjson.loads(raw)
        # OPT_STRICT_INTEGER: refuse ints outside +-(2**53 - 1), which JS rounds.
        if orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER) != raw:
            return None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        # Invalid JSON, lone surrogates, depth beyond orjson's limits...:
        # the slow path decides, with its own error messages.
        return None
    result: dict[str, Any] | list[Any] = value  # orjson.loads is typed Any
    return result


def decode_canonical(raw: bytes) -> tuple[object, bytes]:
    """``(decode_body(raw), canonicalize(raw))``, cheaply when ``raw`` is canonical.

    Raises what decode_body or encode_body would.  Callers that must report a
    decode error before their own checks and an encode error after them (as
    ``wire.queued_event.read_event`` does) use ``decode_if_canonical`` instead.
    """
    value = decode_if_canonical(raw)
    if value is not None:
        return value, raw
    decoded = decode_body(raw)
    return decoded, encode_body(decoded)
