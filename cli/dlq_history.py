"""What ``webhook-dlq show`` prints of a dead letter's attempts, from the delivery log."""

from __future__ import annotations

from typing import Any

from cli.dlq_output import cell, printable
from control.dead_letters.model import DeadLetter
from control.delivery_log.history import History
from control.redaction import Redactor
from control.store.attempts import LoggedAttempt

# Enough of each answer to recognise it on a terminal; --format json has the 4 KiB.
_EXCERPT_CHARS = 300


def history_text(history: History, letter: DeadLetter, redactor: Redactor) -> list[str]:
    """The ``attempt history`` lines of one dead letter's ``show`` block."""
    attempts = history.of(letter.event_id, letter.subscriber)
    if not attempts:
        why = history.unavailable or "none recorded (is DELIVERY_LOG on and a recorder running?)"
        return [f"attempt history:   {cell(why)}"]
    lines = ["attempt history (delivery log):"]
    for logged in attempts:
        record = logged.record
        step: str = record.disposition
        if record.next_attempt is not None:
            step += f" -> attempt {record.next_attempt}"
        if record.dead_letter_reason is not None:
            step += f" ({record.dead_letter_reason})"
        lines.append(
            f"  #{record.attempt}  {record.started_at.isoformat()}  {record.outcome}"
            f"  {cell(record.status)}  {record.duration_seconds * 1000:.0f} ms  {step}"
        )
        if record.error:
            lines.append(f"      error:  {cell(redactor.text(record.error))}")
        answer = _answer(record.response_excerpt, redactor)
        if answer:
            lines.append(f"      answer: {printable(answer[:_EXCERPT_CHARS])}")
    return lines


def history_json(history: History, letter: DeadLetter, redactor: Redactor) -> dict[str, Any]:
    """The ``attempt_history`` of one dead letter for ``show --format json``."""
    attempts = [_attempt_json(a, redactor) for a in history.of(letter.event_id, letter.subscriber)]
    shown: dict[str, Any] = {"attempt_history": attempts}
    if history.unavailable is not None:
        shown["attempt_history_unavailable"] = history.unavailable
    return shown


def _attempt_json(logged: LoggedAttempt, redactor: Redactor) -> dict[str, Any]:
    record = logged.record
    return {
        "attempt": record.attempt,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat(),
        "duration_ms": round(record.duration_seconds * 1000, 1),
        "outcome": record.outcome,
        "status": record.status,
        "error": None if record.error is None else redactor.text(record.error),
        "response_headers": redactor.data(record.response_headers),
        "response_excerpt": _answer(record.response_excerpt, redactor),
        "disposition": record.disposition,
        "next_attempt": record.next_attempt,
        "dead_letter_reason": record.dead_letter_reason,
    }


def _answer(excerpt: bytes, redactor: Redactor) -> str:
    # Masked by the worker already; masked again with the secrets this tool knows.
    return redactor.text(" ".join(excerpt.decode("utf-8", "replace").split()))
