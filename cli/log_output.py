"""What ``webhook-log`` prints: tables and text for people, the API's JSON for scripts.

Everything an endpoint answered (excerpts, errors, headers) and every event
body is untrusted: control and bidi characters are escaped before they reach a
terminal (:func:`cli.dlq_output.printable`).  ``--format json`` prints the
very models the API answers with (:mod:`control.delivery_log.views`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from pydantic import BaseModel

from cli.dlq_output import cell, json_text, printable
from cli.terminal import format_table
from control.delivery_log.views import (
    AttemptPageView,
    AttemptView,
    EndpointSummary,
    EventView,
    LastAttemptView,
    WindowSummary,
)

# Enough of an answer or a body to recognise it on a terminal; --format json has all.
EXCERPT_CHARS = 300
BODY_CHARS = 600


def as_json(view: BaseModel | Sequence[BaseModel]) -> str:
    """The API's JSON of ``view`` (a list for several), indented, terminal-safe."""
    if isinstance(view, BaseModel):
        return json_text(view.model_dump(mode="json"))
    return json_text([item.model_dump(mode="json") for item in view])


def attempts_table(page: AttemptPageView) -> str:
    """``attempts``: one row per attempt, newest first."""
    rows = [["STARTED", "EVENT", "ENDPOINT", "#", "OUTCOME", "STATUS", "MS", "THEN"]]
    for attempt in page.data:
        rows.append(
            [
                _time(attempt.started_at),
                cell(attempt.event_id),
                cell(attempt.endpoint_id),
                str(attempt.attempt),
                cell(attempt.outcome),
                cell(attempt.status),
                f"{attempt.duration_ms:.0f}",
                _then(attempt),
            ]
        )
    if len(rows) == 1:
        return "no attempts match"
    return format_table(rows, right_aligned=(3, 5, 6))


def event_text(event: EventView) -> list[str]:
    """``event``: the event, then each endpoint's attempts in order with their answers."""
    endpoints = len(event.endpoints)
    delivered = sum(1 for e in event.endpoints if e.delivered)
    lines = [
        f"event {cell(event.event_id)}  {cell(event.event_type)}  account {cell(event.account)}",
        f"delivered to {delivered} of {endpoints} endpoint{'s' if endpoints != 1 else ''}",
    ]
    if event.body_kept:
        body = event.body if isinstance(event.body, str) else orjson.dumps(event.body).decode()
        lines.append(f"body: {printable(_short(body, BODY_CHARS))}")
    else:
        lines.append("body: not kept (older than the log's retention, or never recorded)")
    for endpoint in event.endpoints:
        outcome = "delivered" if endpoint.delivered else f"not delivered ({endpoint.last_outcome})"
        count = f"{endpoint.attempts} attempt{'s' if endpoint.attempts != 1 else ''}"
        lines.append("")
        lines.append(f"endpoint {cell(endpoint.endpoint_id)}: {outcome}, {count}")
        for attempt in endpoint.data:
            lines.append(
                f"  #{attempt.attempt}  {_time(attempt.started_at)}  {cell(attempt.outcome)}"
                f"  {cell(attempt.status)}  {attempt.duration_ms:.0f} ms  {_then(attempt)}"
            )
            if attempt.error:
                lines.append(f"      error:  {printable(_short(attempt.error, EXCERPT_CHARS))}")
            answer = _short(attempt.response_excerpt, EXCERPT_CHARS)
            if answer:
                lines.append(f"      answer: {printable(answer)}")
    return lines


def summary_table(summary: EndpointSummary) -> str:
    """``summary``: the last hour and the last day side by side."""
    hour, day = summary.last_hour, summary.last_day
    rows = [
        ["", "LAST HOUR", "LAST DAY"],
        ["attempts", str(hour.attempts), str(day.attempts)],
        ["successes", str(hour.successes), str(day.successes)],
        ["failures", str(hour.failures), str(day.failures)],
        ["success rate", _rate(hour), _rate(day)],
        ["p50 latency", _ms(hour.latency_p50_ms), _ms(day.latency_p50_ms)],
        ["p99 latency", _ms(hour.latency_p99_ms), _ms(day.latency_p99_ms)],
        ["latency over", _sample(hour), _sample(day)],
        ["last success", _last(hour.last_success), _last(day.last_success)],
        ["last failure", _last(hour.last_failure), _last(day.last_failure)],
    ]
    head = f"endpoint {cell(summary.endpoint_id)} as of {_time(summary.generated_at)}"
    return head + "\n" + format_table(rows)


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _then(attempt: AttemptView) -> str:
    if attempt.disposition == "retry" and attempt.next_attempt is not None:
        return f"retry -> #{attempt.next_attempt}"
    if attempt.disposition == "dead_lettered" and attempt.dead_letter_reason:
        return f"dead_lettered ({cell(attempt.dead_letter_reason)})"
    return cell(attempt.disposition)


def _short(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _rate(window: WindowSummary) -> str:
    return "-" if window.success_rate is None else f"{window.success_rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _sample(window: WindowSummary) -> str:
    if window.latency_sample == window.attempts:
        return "all attempts"
    return f"newest {window.latency_sample}"


def _last(last: LastAttemptView | None) -> str:
    if last is None:
        return "-"
    return f"{_time(last.at)} {cell(last.outcome)} {cell(last.status)}"
