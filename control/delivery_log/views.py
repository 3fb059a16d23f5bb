"""The delivery log as the API answers and ``webhook-log --format json`` prints it.

One set of models for both, so a field has the same name everywhere.  Latencies
are milliseconds; the response excerpt is text (UTF-8, undecodable bytes
replaced) and was masked by the worker (the endpoint's secrets, ``***``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from control.store.attempt_listing import AttemptPage
from control.store.attempt_reader import EventHistory
from control.store.attempt_summary import EndpointFigures, LastAttempt, WindowFigures
from control.store.attempts import LoggedAttempt


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AttemptView(_View):
    """One HTTP attempt to deliver one event to one endpoint."""

    id: int = Field(description="the log's row id")
    event_id: str
    event_account: str = Field(description="the account whose event it was")
    endpoint_id: str
    event_type: str
    attempt: int = Field(description="1 for the first; a resend or replay starts again at 1")
    started_at: datetime
    ended_at: datetime
    duration_ms: float
    outcome: str = Field(
        description="success, http_error, timeout, connection_error or forbidden_address"
    )
    status: int | None = Field(description="the HTTP status; null when there was no answer")
    error: str | None
    response_headers: dict[str, str] = Field(description="an allow-list of the answer's headers")
    response_excerpt: str = Field(description="the first 4 KiB of the answer, secrets masked")
    disposition: str = Field(description="what came next: delivered, retry or dead_lettered")
    next_attempt: int | None = Field(description="the retry's attempt number")
    dead_letter_reason: str | None
    recorded_at: datetime

    @classmethod
    def of(cls, logged: LoggedAttempt) -> AttemptView:
        """The view of a stored attempt."""
        record = logged.record
        return cls(
            id=logged.id,
            event_id=record.event_id,
            event_account=record.account,
            endpoint_id=record.endpoint_id,
            event_type=record.event_type,
            attempt=record.attempt,
            started_at=record.started_at,
            ended_at=record.ended_at,
            duration_ms=round(record.duration_seconds * 1000, 1),
            outcome=record.outcome,
            status=record.status,
            error=record.error,
            response_headers=dict(record.response_headers),
            response_excerpt=record.response_excerpt.decode("utf-8", "replace"),
            disposition=record.disposition,
            next_attempt=record.next_attempt,
            dead_letter_reason=record.dead_letter_reason,
            recorded_at=logged.recorded_at,
        )


class AttemptPageView(_View):
    """One page of attempts, newest first."""

    data: list[AttemptView]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )

    @classmethod
    def of(cls, page: AttemptPage) -> AttemptPageView:
        """The view of a page from the store."""
        return cls(data=[AttemptView.of(a) for a in page.attempts], next_cursor=page.next_cursor)


class EndpointAttempts(_View):
    """One endpoint's attempts at one event, in order (time, then attempt number)."""

    endpoint_id: str
    attempts: int
    delivered: bool = Field(description="true when one of them succeeded")
    last_outcome: str
    data: list[AttemptView]


class EventView(_View):
    """One event and everything the log holds of its delivery."""

    event_id: str
    account: str = Field(description="the account whose event it is")
    event_type: str
    body: Any = Field(
        None,
        description="the event's body as delivered (JSON when it is JSON, else text); "
        "null once the log no longer keeps it",
    )
    body_kept: bool
    endpoints: list[EndpointAttempts] = Field(
        description="per endpoint, in the order of their first attempt"
    )

    @classmethod
    def of(cls, history: EventHistory) -> EventView:
        """The view of an event's history from the store."""
        endpoints = []
        for endpoint_id, attempts in history.endpoints.items():
            endpoints.append(
                EndpointAttempts(
                    endpoint_id=endpoint_id,
                    attempts=len(attempts),
                    delivered=any(a.record.outcome == "success" for a in attempts),
                    last_outcome=attempts[-1].record.outcome,
                    data=[AttemptView.of(a) for a in attempts],
                )
            )
        return cls(
            event_id=history.event_id,
            account=history.account,
            event_type=history.event_type,
            body=None if history.body is None else _body(history.body),
            body_kept=history.body is not None,
            endpoints=endpoints,
        )


class LastAttemptView(_View):
    """When the last such attempt started, and what it got."""

    at: datetime
    outcome: str
    status: int | None

    @classmethod
    def of(cls, last: LastAttempt | None) -> LastAttemptView | None:
        """The view, or None for none."""
        return None if last is None else cls(at=last.at, outcome=last.outcome, status=last.status)


class WindowSummary(_View):
    """The figures of the attempts that started in one window."""

    since: datetime
    attempts: int
    successes: int
    failures: int
    success_rate: float | None = Field(description="successes / attempts; null without attempts")
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_sample: int = Field(
        description="how many attempts the percentiles describe: all of the window's, or "
        "its newest 10,000 when it has more"
    )
    last_success: LastAttemptView | None
    last_failure: LastAttemptView | None

    @classmethod
    def of(cls, window: WindowFigures) -> WindowSummary:
        """The view of one window's figures."""
        return cls(
            since=window.since,
            attempts=window.attempts,
            successes=window.successes,
            failures=window.failures,
            success_rate=window.success_rate,
            latency_p50_ms=_ms(window.p50_seconds),
            latency_p99_ms=_ms(window.p99_seconds),
            latency_sample=window.latency_sample,
            last_success=LastAttemptView.of(window.last_success),
            last_failure=LastAttemptView.of(window.last_failure),
        )


class EndpointSummary(_View):
    """How one endpoint is doing: the last hour and the last day."""

    endpoint_id: str
    generated_at: datetime
    last_hour: WindowSummary
    last_day: WindowSummary

    @classmethod
    def of(cls, endpoint_id: str, figures: EndpointFigures) -> EndpointSummary:
        """The view of an endpoint's figures."""
        return cls(
            endpoint_id=endpoint_id,
            generated_at=figures.now,
            last_hour=WindowSummary.of(figures.last_hour),
            last_day=WindowSummary.of(figures.last_day),
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
