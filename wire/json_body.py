"""The exact bytes of a webhook body.

Receivers verify our signature over ``JSON.stringify(req.body)``, i.e. over
what JavaScript makes of the body after ``JSON.parse``, not over the bytes we
sent.  So the body must already be a fixed point of
``JSON.stringify(JSON.parse(body))``; any other byte is a signature failure on
the merchant's side.  ``encode_body`` produces that form.

Why not ``json.dumps(separators=(",", ":"), ensure_ascii=False)``:

* object keys: JS puts array-index keys ("0" .. "4294967294") first, in
  numeric order, then the other keys in insertion order; ``json.dumps`` keeps
  plain insertion order (and silently turns int keys into strings);
* numbers: ``json.dumps`` writes ``1250.0``, ``1e-07``, ``1e+16`` and exact
  big ints, where JS writes ``1250``, ``1e-7``, ``10000000000000000`` and the
  double nearest the int (``2**64`` -> ``18446744073709552000``);
* strings: lone surrogates come out raw (unencodable as UTF-8), while
  well-formed ``JSON.stringify`` escapes them as ``\\udxxx``.

Why not an RFC 8785 (JCS) library: JCS sorts *all* keys by UTF-16 code
units, JSON.stringify does not sort at all (apart from index keys), so a JCS
body fails verification for any object whose keys are not already sorted.
The number format is the one thing they share.

``decode_body`` is the matching parser: ``json.loads`` with the inputs that
``JSON.parse`` would turn into something else refused (``NaN``/``Infinity``
are not JSON, ``1e400`` becomes ``Infinity`` and then ``null``), so
``canonicalize`` never changes a value behind the sender's back.

The orjson fast path for bodies that are already in that form lives in
``wire.canonical_fast_path``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring  # the C version when available

from config.errors import PayloadError

__all__ = ["canonicalize", "decode_body", "encode_body"]

_MAX_ARRAY_INDEX = 4_294_967_294  # 2**32 - 2: ECMAScript "array index"
_MAX_EXACT_INT = 2**53  # below this, str(int) is already the JS form
_SURROGATE = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def encode_body(value: object) -> bytes:
    """UTF-8 JSON text of ``value`` exactly as ``JSON.stringify`` writes it.

    Accepts dict (str keys), list/tuple, str, int, float, bool and None; raises
    PayloadError for anything else, non-finite floats, ints beyond the double
    range, and nesting too deep (or circular).
    """
    parts: list[str] = []
    try:
        _encode(value, parts.append)
    except RecursionError:
        raise PayloadError("payload is nested too deeply (or is circular)") from None
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Only surrogate code points fail to encode, and encode_basestring
        # leaves them raw inside string literals; fixing them up on the
        # joined text keeps this cost off the common path.  A pair can't
        # straddle two literals because quotes always separate them.
        return _SURROGATE.sub(_fix_surrogates, text).encode("utf-8")


def decode_body(raw: bytes) -> object:
    """Parse JSON bytes to Python values the way ``JSON.parse`` sees them.

    Raises PayloadError for invalid UTF-8, invalid JSON, NaN/Infinity
    literals and numbers that overflow a double (JS would make them Infinity).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None


def canonicalize(raw: bytes) -> bytes:
    """``encode_body(decode_body(raw))``: the body a JS receiver will re-create."""
    return encode_body(decode_body(raw))


def _encode(value: object, emit: Callable[[str], object]) -> None:
    # Exact type checks first: they are the common case and cheaper than
    # isinstance; subclasses (StrEnum, IntEnum, OrderedDict...) fall through
    # to _encode_other.
    t = type(value)
    if t is str:
        emit(encode_basestring(value))  # type: ignore[arg-type]
    elif t is dict:
        _encode_object(value, emit)  # type: ignore[arg-type]
    elif t is list or t is tuple:
        _encode_array(value, emit)  # type: ignore[arg-type]
    elif t is int:
        emit(_int_to_js(value))  # type: ignore[arg-type]
    elif t is float:
        emit(_float_to_js(value))  # type: ignore[arg-type]
    elif value is None:
        emit("null")
    elif value is True:
        emit("true")
    elif value is False:
        emit("false")
    else:
        _encode_other(value, emit)


def _encode_object(obj: dict[str, object], emit: Callable[[str], object]) -> None:
    index_keys: list[str] = []
    for key in obj:
        if type(key) is not str and not isinstance(key, str):
            raise PayloadError(f"object keys must be str, not {type(key).__name__}: {key!r:.80}")
        # Most keys start with a letter: one comparison rules them out.
        if key and "0" <= key[0] <= "9" and _is_array_index(key):
            index_keys.append(key)
    items: Iterable[tuple[str, object]]
    if index_keys:
        index_keys.sort(key=int)
        seen = set(index_keys)
        order = index_keys + [k for k in obj if k not in seen]
        items = [(k, obj[k]) for k in order]
    else:
        items = obj.items()
    emit("{")
    first = True
    for key, item in items:
        if first:
            first = False
        else:
            emit(",")
        emit(encode_basestring(key))
        emit(":")
        _encode(item, emit)
    emit("}")


def _encode_array(seq: list[object] | tuple[object, ...], emit: Callable[[str], object]) -> None:
    emit("[")
    first = True
    for item in seq:
        if first:
            first = False
        else:
            emit(",")
        _encode(item, emit)
    emit("]")


def _encode_other(value: object, emit: Callable[[str], object]) -> None:
    if isinstance(value, str):
        emit(encode_basestring(value))
    elif isinstance(value, bool):  # pragma: no cover - bool cannot be subclassed
        emit("true" if value else "false")
    elif isinstance(value, int):
        emit(_int_to_js(int(value)))
    elif isinstance(value, float):
        emit(_float_to_js(float(value)))
    elif isinstance(value, dict):
        _encode_object(value, emit)
    elif isinstance(value, list | tuple):
        _encode_array(value, emit)
    else:
        raise PayloadError(f"cannot encode {type(value).__name__} as JSON: {value!r:.80}")


def _is_array_index(key: str) -> bool:
    # "0" is an index, "01", "+1", "1.0", U+0661 (Arabic-Indic one) are not.
    return (
        key.isascii()
        and key.isdigit()
        and (len(key) == 1 or key[0] != "0")
        and len(key) <= 10
        and int(key) <= _MAX_ARRAY_INDEX
    )


def _int_to_js(n: int) -> str:
    if -_MAX_EXACT_INT < n < _MAX_EXACT_INT:
        return str(n)
    try:
        as_double = float(n)
    except OverflowError:
        raise PayloadError(
            f"integer with {n.bit_length()} bits is beyond the range of a JS number"
        ) from None
    return _float_to_js(as_double)


def _float_to_js(x: float) -> str:
    """ECMAScript Number::toString(x) for a finite double.

    Python's repr already gives the shortest digits that round-trip (the same
    digits JS picks); only the layout differs.
    """
    r = repr(x)
    if "e" not in r:
        if r[-2:] == ".0":
            r = r[:-2]
            return "0" if r == "-0" else r
        if r in ("nan", "inf", "-inf"):
            raise PayloadError(f"{r} is not a JSON number")
        return r  # "0.1", "-123.456", "0.0001": fixed notation in both
    return _exponent_repr_to_js(r)


def _exponent_repr_to_js(r: str) -> str:
    # repr switches to exponent form outside 1e-4 <= |x| < 1e16, JS outside
    # 1e-6 <= |x| < 1e21; re-lay the digits per ECMA-262 Number::toString.
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mantissa, _, exp_text = r.partition("e")
    digits = mantissa.replace(".", "")
    k = len(digits)  # repr's mantissa has no trailing zeros after the point
    n = int(exp_text) + 1  # decimal point position: value = 0.digits * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exp = f"e+{e}" if e >= 0 else f"e{e}"
    if k == 1:
        return sign + digits + exp
    return sign + digits[0] + "." + digits[1:] + exp


def _fix_surrogates(match: re.Match[str]) -> str:
    s = match.group()
    if len(s) == 2:
        # Two code points that are a UTF-16 pair in JS: one character there.
        return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    return f"\\u{ord(s):04x}"


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise PayloadError(f"number {text[:40]} overflows a double (JS would make it null)")
    return value


def _parse_int(text: str) -> int:
    # DBL_MAX has 309 digits; anything longer is Infinity in JS, and Python
    # would refuse >4300 digits with a confusing ValueError anyway.
    ndigits = len(text) - (text[0] == "-")
    if ndigits > 309:
        raise PayloadError(
            f"integer with {ndigits} digits overflows a double (JS would make it null)"
        )
    value = int(text)
    if ndigits == 309:
        try:
            float(value)
        except OverflowError:
            raise PayloadError("integer overflows a double (JS would make it null)") from None
    return value


def _reject_constant(name: str) -> object:
    raise PayloadError(f"{name} is not valid JSON")


# Built once: json.loads(text, parse_float=...) builds a new decoder (and its
# C scanner) on every call, which was half the cost of decoding a body.
_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
)
