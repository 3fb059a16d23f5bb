"""One endpoint's delivery figures for the last hour and the last day.

Bounded whatever the traffic: the counts are one aggregate over the day's
index range (``ix_delivery_attempts_endpoint_time``), done by the database;
the same pass finds when the last success and the last failure started (an
index seek each then reads their status); latencies are read for at most
``LATENCY_SAMPLE`` attempts, the newest of the window.  So p50 and p99 are exact
for a window of up to ``LATENCY_SAMPLE`` attempts, and describe its newest
``LATENCY_SAMPLE`` beyond (``latency_sample`` says how many).  Percentiles are
nearest-rank: the smallest latency at least p% of the attempts did not exceed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, case, func, select

from control.store.attempt_tables import AttemptRow

LATENCY_SAMPLE = 10_000
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SUCCESS = "success"


@dataclass(frozen=True)
class LastAttempt:
    """When an attempt started, what it came to and the status it got."""

    at: datetime
    outcome: str
    status: int | None


@dataclass(frozen=True)
class WindowFigures:
    """The figures of one window (attempts that started at or after ``since``)."""

    since: datetime
    attempts: int
    successes: int
    p50_seconds: float | None
    p99_seconds: float | None
    latency_sample: int
    last_success: LastAttempt | None
    last_failure: LastAttempt | None

    @property
    def failures(self) -> int:
        """Attempts that did not succeed (any other outcome)."""
        return self.attempts - self.successes

    @property
    def success_rate(self) -> float | None:
        """Successes over attempts; None without attempts."""
        return self.successes / self.attempts if self.attempts else None


@dataclass(frozen=True)
class EndpointFigures:
    """The last hour's and the last day's figures, as of ``now``."""

    now: datetime
    last_hour: WindowFigures
    last_day: WindowFigures


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ascending ``ordered`` (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(connection: Connection, scope: ColumnElement[bool], now: datetime) -> EndpointFigures:
    """The figures of the attempts meeting ``scope`` (one endpoint's, as one account sees)."""
    day, hour = now - DAY, now - HOUR
    in_day = (scope, AttemptRow.started_at >= day)
    succeeded = AttemptRow.outcome == SUCCESS
    in_hour = AttemptRow.started_at >= hour
    failed = AttemptRow.outcome != SUCCESS
    counts = connection.execute(
        select(
            func.count(),
            func.sum(case((succeeded, 1), else_=0)),
            func.sum(case((in_hour, 1), else_=0)),
            func.sum(case((in_hour & succeeded, 1), else_=0)),
            # In the same pass: a healthy endpoint has no failure to walk back to.
            func.max(case((succeeded, AttemptRow.started_at))),
            func.max(case((failed, AttemptRow.started_at))),
        ).where(*in_day)
    ).one()
    day_attempts, day_successes, hour_attempts, hour_successes = (int(n or 0) for n in counts[:4])
    latest = connection.execute(
        select(AttemptRow.started_at, AttemptRow.duration_seconds)
        .where(*in_day)
        # Time alone (no id tie-break): either index on (endpoint_id, started_at, ...) serves it.
        .order_by(AttemptRow.started_at.desc())
        .limit(LATENCY_SAMPLE)
    ).all()
    last: dict[bool, LastAttempt | None] = {}
    for success, at in ((True, counts[4]), (False, counts[5])):
        row = None
        if at is not None:  # one index seek: the endpoint's attempts at that moment
            row = connection.execute(
                select(AttemptRow.started_at, AttemptRow.outcome, AttemptRow.status)
                .where(scope, AttemptRow.started_at == at, succeeded if success else failed)
                .limit(1)
            ).first()
        last[success] = None if row is None else LastAttempt(row[0], row[1], row[2])
    day_latencies = sorted(row[1] for row in latest)
    hour_latencies = sorted(row[1] for row in latest if row[0] >= hour)
    return EndpointFigures(
        now=now,
        last_hour=WindowFigures(
            since=hour,
            attempts=hour_attempts,
            successes=hour_successes,
            p50_seconds=percentile(hour_latencies, 0.50),
            p99_seconds=percentile(hour_latencies, 0.99),
            latency_sample=len(hour_latencies),
            last_success=_within(last[True], hour),
            last_failure=_within(last[False], hour),
        ),
        last_day=WindowFigures(
            since=day,
            attempts=day_attempts,
            successes=day_successes,
            p50_seconds=percentile(day_latencies, 0.50),
            p99_seconds=percentile(day_latencies, 0.99),
            latency_sample=len(day_latencies),
            last_success=last[True],
            last_failure=last[False],
        ),
    )


def _within(last: LastAttempt | None, since: datetime) -> LastAttempt | None:
    return last if last is not None and last.at >= since else None
