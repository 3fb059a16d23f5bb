"""Event data given to ``webhook-publish``: one JSON document, or JSON lines (one event each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from config.errors import PayloadError


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise PayloadError(f"{name} is not valid JSON")


def _parse(text: str, label: str) -> Any:
    try:
        # Python's json accepts NaN/Infinity and keeps the last duplicate key
        # silently; neither survives a JavaScript receiver, so refuse both here.
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"{label}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except PayloadError as exc:
        raise PayloadError(f"{label}: not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(f"{label}: JSON is nested too deeply") from None


def _read_text(source: str, label: str) -> str:
    try:
        if source == "-":
            buffer = getattr(sys.stdin, "buffer", None)
            raw = buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8")
        else:
            raw = Path(source).read_bytes()
    except FileNotFoundError:
        raise PayloadError(f"{label}: no such file") from None
    except OSError as exc:
        raise PayloadError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{label}: not UTF-8 (byte {exc.start})") from None


def read_data(source: str) -> Any:
    """Parse the JSON document in file ``source`` (``-`` for stdin); PayloadError if bad."""
    label = "stdin" if source == "-" else source
    return _parse(_read_text(source, label), label)


def read_events(source: str) -> list[dict[str, Any]]:
    """The data objects in ``source``: one JSON document, or one per line (JSON lines).

    A document spread over several lines is one event; several documents, each
    on its own line, are several events, published in order.
    """
    label = "stdin" if source == "-" else source
    text = _read_text(source, label)
    try:
        documents = [_parse(text, label)]
    except PayloadError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2 or "Extra data" not in str(whole):
            raise
        documents = [_parse(line, f"{label} line {n}") for n, line in lines]
    for index, document in enumerate(documents, 1):
        if not isinstance(document, dict):
            where = label if len(documents) == 1 else f"{label} event {index}"
            raise PayloadError(f"{where}: the data must be a JSON object, got {_kind(document)}")
    return documents


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
