"""What ``webhook-dlq`` prints: the ``list`` table and JSON, ``show`` blocks, progress lines.

Payloads and headers are untrusted and land on a terminal: control and
bidirectional-override characters are escaped, and every value from a message
passes through the :class:`~control.redaction.Redactor` first (raw property
bytes too, before they are shown as base64).
"""

from __future__ import annotations

import base64
import json
import textwrap
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from cli.terminal import format_table
from config.topology import dead_letter_queue, subscriber_of_queue, work_queue
from control.dead_letters.model import DeadLetter, jsonable
from control.dead_letters.reader import MAX_WINDOW
from control.dead_letters.replay import replay_note
from control.redaction import MAX_WALK_DEPTH, Redactor, nesting_depth
from wire import contract

_LAST_ERROR_CHARS = 40
# Bidirectional overrides can make a terminal show text other than what it is.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str, *, newlines: bool = False) -> str:
    """Escape control characters: payloads are untrusted and land on a terminal."""
    out = []
    for char in text:
        if (newlines and char == "\n") or (
            unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS
        ):
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def json_text(document: Any) -> str:
    """JSON for stdout: readable Unicode, but no raw control or bidi characters."""
    text = json.dumps(document, ensure_ascii=False, indent=2)
    # json.dumps escapes C0 controls but not C1 ones; raw newlines are indentation.
    return "".join(
        f"\\u{ord(c):04x}"
        if c != "\n" and (unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS)
        else c
        for c in text
    )


def cell(value: Any) -> str:
    """One value as a table cell or line field: ``-`` when missing, escaped otherwise."""
    return "-" if value is None or value == "" else printable(str(value))


def _short(text: str | None, width: int = _LAST_ERROR_CHARS) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _when(letter: DeadLetter) -> str:
    at = letter.summary()["dead_lettered_at"]
    return at[:19] + "Z" if isinstance(at, str) else "-"


def count_phrase(n: int) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{n} dead letter{'' if n == 1 else 's'}"


def move_line(letter: DeadLetter) -> str:
    """A replayed letter: event id, subscriber, event, and from which queue to which."""
    return (
        f"{cell(letter.event_id)}  {cell(letter.subscriber)}  {cell(letter.event_type)}  "
        f"{letter.queue} -> {work_queue(subscriber_of_queue(letter.queue) or '?')}"
    )


def note_line(letter: DeadLetter) -> str | None:
    """The line under a replayed letter's when its copy leaves headers out, else None."""
    note = replay_note(letter)
    return None if note is None else f"  note: {cell(note)}"


def delete_line(letter: DeadLetter) -> str:
    """A purged letter: event id, event, queue."""
    return f"{cell(letter.event_id)}  {cell(letter.event_type)}  {letter.queue}"


def incomplete_warning(queue: str, unread: int) -> str:
    """Why part of ``queue`` was not looked at."""
    return (
        f"{unread} message(s) of {queue} were not examined "
        f"(read at most {MAX_WINDOW} unacked at a time, or another client holds them)"
    )


# ------------------------------------------------------------------ list


def list_json(
    letters: Sequence[DeadLetter],
    counts: Mapping[str, int | None] | None,
    incomplete: Mapping[str, int],
    redactor: Redactor,
) -> str:
    """``list --format json``: the rows, the DLQ depths (None when filtered), what was unread."""
    document = {
        "dead_letters": [redactor.data(letter.summary()) for letter in letters],
        "counts": counts,
        "incomplete": incomplete,
    }
    return json_text(document)


def list_table(letters: Sequence[DeadLetter], redactor: Redactor) -> str:
    """``list``: one row per dead letter."""
    rows = [
        ("EVENT ID", "SUBSCRIBER", "EVENT", "ATTEMPTS", "STATUS", "REASON", "LAST ERROR", "DEAD AT")
    ]
    for letter in letters:
        rows.append(
            (
                cell(letter.event_id),
                cell(letter.subscriber),
                cell(letter.event_type),
                cell(letter.attempts),
                # 0 means no HTTP answer at all (timeout, refused connection).
                cell(letter.last_status or None),
                cell(_short(redactor.text(letter.reason or ""))),
                cell(_short(redactor.text(letter.last_error or ""))),
                _when(letter),
            )
        )
    return format_table(rows)


def depth_table(depths: Mapping[str, int | None]) -> str:
    """``list`` without filters: how many dead letters each subscriber's DLQ holds."""
    rows = [("SUBSCRIBER", "DEAD LETTERS", "QUEUE")]
    for subscriber, depth in depths.items():
        shown = "-" if depth is None else str(depth)
        queue = dead_letter_queue(subscriber) + (" (not declared)" if depth is None else "")
        rows.append((subscriber, shown, queue))
    return format_table(rows)


# ------------------------------------------------------------------ show


def show_json(
    letters: Sequence[DeadLetter],
    redactor: Redactor,
    extra: Callable[[DeadLetter], dict[str, Any]] | None = None,
) -> str:
    """``show --format json``: every record, with the body also parsed as ``payload``
    (and what ``extra`` adds to it: the attempt history)."""
    shown = []
    for letter in letters:
        record = _shown_record(letter, redactor)
        if extra is not None:
            record.update(extra(letter))
        shown.append(record)
    return json_text(shown)


def _shown_record(letter: DeadLetter, redactor: Redactor) -> dict[str, Any]:
    record: dict[str, Any] = redactor.data(_with_payload(letter.to_json()))
    masked = _masked_raw(letter, redactor)
    if masked is not None:
        record["raw_properties_base64"] = masked
        if contract.RAW_PROPERTIES in record["headers"]:
            record["headers"][contract.RAW_PROPERTIES] = masked
    return record


def _masked_raw(letter: DeadLetter, redactor: Redactor) -> str | None:
    """The raw property bytes as base64, with what the redactor hides blanked out first."""
    if letter.raw_properties is None:
        return None
    return base64.b64encode(redactor.raw(letter.raw_properties, letter.headers)).decode()


def show_text(
    letters: Sequence[DeadLetter],
    redactor: Redactor,
    extra: Callable[[DeadLetter], list[str]] | None = None,
) -> str:
    """``show``: one block per letter, headers and the pretty-printed payload (and the
    lines ``extra`` adds: the attempt history)."""
    blocks = []
    for letter in letters:
        lines = [_show_block(letter, redactor)]
        if extra is not None:
            lines.extend(extra(letter))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _with_payload(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("body")
    if isinstance(body, str):
        with suppress(ValueError, RecursionError):
            payload = json.loads(body)
            # A body too deep to walk stays in "body" only (its text, masked).
            if nesting_depth(payload) <= MAX_WALK_DEPTH:
                record["payload"] = payload
    return record


def _show_block(letter: DeadLetter, redactor: Redactor) -> str:
    summary = redactor.data(letter.summary())
    lines = [
        f"event id:          {cell(summary['event_id'])}",
        f"event:             {cell(summary['event_type'])}",
        f"subscriber:        {cell(summary['subscriber'])}",
        f"queue:             {letter.queue}",
        f"attempts:          {cell(summary['attempts'])}",
        f"last status:       {cell(summary['last_status'])}",
        f"last error:        {cell(summary['last_error'])}",
        f"reason:            {cell(summary['reason'])}",
        f"dead-lettered at:  {cell(summary['dead_lettered_at'])}",
    ]
    if letter.undecodable is not None:
        lines.append(f"undecodable:       {cell(letter.undecodable)}")
    lines.append("properties:")
    for key, value in redactor.data(jsonable(letter.properties)).items():
        lines.append(f"  {printable(key)}: {cell(value)}")
    lines.append("headers:")
    headers = redactor.data(jsonable(letter.headers))
    for key in sorted(headers):
        value = headers[key]
        if key == contract.RAW_PROPERTIES and letter.raw_properties is not None:
            value = "(shown below as raw properties)"
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"  {printable(key)}: {cell(shown)}")
    lines.extend(_raw_block(letter, redactor))
    lines.append(f"payload ({len(letter.body)} bytes):")
    lines.append(printable(redactor.text(_pretty(letter.body, redactor)), newlines=True))
    return "\n".join(lines)


def _raw_block(letter: DeadLetter, redactor: Redactor) -> list[str]:
    masked = _masked_raw(letter, redactor)
    if masked is None or letter.raw_properties is None:
        return []
    size = len(letter.raw_properties)
    full = letter.headers.get(contract.RAW_PROPERTIES_SIZE)
    of = f" of {full}" if isinstance(full, int) and full > size else ""
    title = f"raw properties ({size}{of} bytes, base64, secrets blanked):"
    return [title, *textwrap.wrap(masked, 76, initial_indent="  ", subsequent_indent="  ")]


def _pretty(body: bytes, redactor: Redactor) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "(not UTF-8; base64) " + base64.b64encode(body).decode("ascii")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text
    depth = nesting_depth(document)
    if depth > MAX_WALK_DEPTH:
        return f"(nested more than {MAX_WALK_DEPTH} levels deep; shown as received)\n{text}"
    return json.dumps(redactor.data(document), ensure_ascii=False, indent=2)
