"""``python -m bench.attempt_listing``: listing the delivery log among millions of attempts.

Fills a throwaway PostgreSQL cluster (or ``--database-url``, filled only when
its log is empty) with ``--rows`` realistic attempts (bench.attempt_rows), then
times the real listing code (``control.store.attempt_listing.list_attempts``,
100 rows a page, through the store's own connection pool) over many requests
per kind of listing and prints p50/p99/max per kind, with
``EXPLAIN (ANALYZE, BUFFERS)`` of the kinds whose p99 is over half the
100 ms target, and the table's indexes.

The figure of the issue: one endpoint's attempts among 10 million rows,
p99 < 100 ms.  Every loop is bounded in count and time; the machine's other
load (CPU used meanwhile by processes other than this one and its database
backend) is printed with the figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench import procstat
from bench.attempt_rows import HOT_ENDPOINTS, Spread, account_of, endpoint_id, fill
from bench.delivery_log import other_load_pct, snapshot
from control.store.attempt_listing import (
    AttemptFilter,
    AttemptPage,
    cursor_before,
    list_attempts,
    page_query,
)
from control.store.database import Database, DatabaseUrl
from control.store.migrator import migrate
from devtools.postgres_node import LocalPostgres, create_database

TARGET_MS = 100.0
SECONDS_PER_KIND = 20.0
# Plans are printed for the kinds whose server time p99 reaches this.
EXPLAIN_MS = 10.0
# A cursor's id part when it only marks a moment: every row at that moment is older.
_LAST_ID = 2**62


@dataclass(frozen=True)
class Request:
    """One listing call: what to list, from where."""

    where: AttemptFilter
    cursor: str | None = None


Kind = tuple[str, Callable[[int], Request]]


def say(line: str) -> None:
    print(line, flush=True)


def cursor_at(moment: datetime) -> str:
    """The cursor of a page that starts just before ``moment`` (a deep page)."""
    return cursor_before(moment, _LAST_ID)


class Sample:
    """What the data holds, for choosing realistic requests."""

    def __init__(self, database: Database, spread: Spread, seed: int) -> None:
        self.spread = spread
        self.random = random.Random(seed)  # noqa: S311 - repeatable choices, no secret
        with database.reading() as connection:
            first, last = connection.execute(
                text("SELECT min(started_at), max(started_at) FROM delivery_attempts")
            ).one()
            self.events = [
                row[0]
                for row in connection.execute(
                    text(
                        "SELECT event_id FROM delivery_attempts TABLESAMPLE SYSTEM (1) "
                        "REPEATABLE (7) LIMIT 2000"
                    )
                )
            ]
        self.first: datetime = first
        self.last: datetime = last
        self.cold = [endpoint_id(i) for i in range(spread.endpoints * 4 // 5, spread.endpoints)]

    def hot(self, i: int) -> str:
        return endpoint_id(i % HOT_ENDPOINTS)

    def warm(self, i: int) -> str:
        return endpoint_id(HOT_ENDPOINTS + i % 50)

    def cold_endpoint(self) -> str:
        return self.random.choice(self.cold)

    def cold_account(self) -> str:
        return account_of(
            self.random.randrange(self.spread.accounts // 2, self.spread.accounts), self.spread
        )

    def moment(self) -> datetime:
        """A random moment of the data's span, away from its newest hour."""
        span = (self.last - self.first).total_seconds() - 3600
        return self.first + timedelta(seconds=self.random.uniform(0, max(span, 1)))

    def event(self) -> str:
        return self.random.choice(self.events) if self.events else "evt_none"


def kinds(s: Sample) -> list[Kind]:
    """Every kind of listing measured, and how its i-th request is chosen."""
    hour, day = timedelta(hours=1), timedelta(days=1)

    def within(width: timedelta, *, deep: bool = False, **fields: Any) -> Request:
        """A window of ``width`` at a random moment; ``deep``: from its middle on."""
        start = s.moment()
        where = AttemptFilter(since=start, until=start + width, **fields)
        return Request(where, cursor_at(start + width / 2) if deep else None)

    return [
        ("endpoint, hot, first page", lambda i: Request(AttemptFilter(endpoint_ids=[s.hot(i)]))),
        ("endpoint, warm, first page", lambda i: Request(AttemptFilter(endpoint_ids=[s.warm(i)]))),
        ("endpoint, cold, first page",
         lambda i: Request(AttemptFilter(endpoint_ids=[s.cold_endpoint()]))),
        ("endpoint, hot, deep page (cursor days back)",
         lambda i: Request(AttemptFilter(endpoint_ids=[s.hot(i)]), cursor_at(s.moment()))),
        ("endpoint, hot, 1-hour window",
         lambda i: within(hour, endpoint_ids=[s.hot(i)])),
        ("endpoint + account, hot",
         lambda i: Request(AttemptFilter(account=account_of(i % HOT_ENDPOINTS, s.spread),
                                         endpoint_ids=[s.hot(i)]))),
        ("account, hot, first page",
         lambda i: Request(AttemptFilter(account=account_of(i % HOT_ENDPOINTS, s.spread)))),
        ("account, cold, first page", lambda i: Request(AttemptFilter(account=s.cold_account()))),
        ("account, hot, deep page",
         lambda i: Request(AttemptFilter(account=account_of(i % HOT_ENDPOINTS, s.spread)),
                           cursor_at(s.moment()))),
        ("event id", lambda i: Request(AttemptFilter(event_id=s.event()))),
        ("outcome timeout, 1-hour window",
         lambda i: within(hour, outcome="timeout")),
        ("outcome connection_error, newest",
         lambda i: Request(AttemptFilter(outcome="connection_error"))),
        ("outcome http_error, 1-day window, deep page",
         lambda i: within(day, deep=True, outcome="http_error")),
        ("time range only, 1-hour window", lambda i: within(hour)),
        ("status 404 (rare), newest", lambda i: Request(AttemptFilter(status=404))),
        ("endpoint hot + outcome timeout",
         lambda i: Request(AttemptFilter(endpoint_ids=[s.hot(i)], outcome="timeout"))),
        ("endpoint hot + status 410 (rare)",
         lambda i: Request(AttemptFilter(endpoint_ids=[s.hot(i)], status=410))),
        ("endpoint hot + outcome http_error + status 503 + 1-day window",
         lambda i: within(day, endpoint_ids=[s.hot(i)], outcome="http_error", status=503)),
        ("endpoint cold + outcome timeout",
         lambda i: Request(AttemptFilter(endpoint_ids=[s.cold_endpoint()], outcome="timeout"))),
        ("account hot + outcome connection_error",
         lambda i: Request(AttemptFilter(account=account_of(i % HOT_ENDPOINTS, s.spread),
                                         outcome="connection_error"))),
    ]  # fmt: skip


@dataclass
class Timings:
    """Per call: list_attempts' wall time, the server's execution time and buffers touched."""

    calls: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    buffers: list[float] = field(default_factory=list)
    slowest: Request | None = None  # by the server's time


def timed(database: Database, request: Request, timings: Timings) -> AttemptPage:
    """One call, timed, then the same statement again under EXPLAIN ANALYZE."""
    began = time.perf_counter()
    page = list_attempts(database, request.where, cursor=request.cursor)
    timings.calls.append(time.perf_counter() - began)
    plan = explain(database, request, "ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON")[0][0]
    server = plan["Execution Time"] / 1000
    if server >= max(timings.server, default=0.0):
        timings.slowest = request
    timings.server.append(server)
    timings.buffers.append(plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"])
    return page


def measure(database: Database, make: Callable[[int], Request], requests: int) -> Timings:
    """Up to ``requests`` calls, or as many as SECONDS_PER_KIND allows."""
    timings = Timings()
    deadline = time.monotonic() + SECONDS_PER_KIND
    for i in range(requests):
        timed(database, make(i), timings)
        if time.monotonic() > deadline:
            break
    return timings


def walk(database: Database, s: Sample, pages: int) -> Timings:
    """Pages 1 to N of each hot endpoint, following next_cursor."""
    timings = Timings()
    deadline = time.monotonic() + SECONDS_PER_KIND
    for endpoint in range(HOT_ENDPOINTS):
        request = Request(AttemptFilter(endpoint_ids=[s.hot(endpoint)]))
        for _ in range(pages // HOT_ENDPOINTS):
            cursor = timed(database, request, timings).next_cursor
            if cursor is None or time.monotonic() > deadline:
                break
            request = Request(request.where, cursor)
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def explain(database: Database, request: Request, options: str) -> list[Any]:
    """EXPLAIN (``options``) of the statement list_attempts runs for ``request``."""
    compiled = page_query(request.where, cursor=request.cursor).compile(
        dialect=database.engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    with database.reading() as connection:
        rows = connection.exec_driver_sql(
            f"EXPLAIN ({options}) " + compiled.string, compiled.params
        )
        return [row[0] for row in rows]


def describe(database: Database) -> None:
    with database.reading() as connection:
        size = connection.execute(
            text(
                "SELECT count(*), pg_size_pretty(pg_table_size('delivery_attempts')), "
                "pg_size_pretty(pg_indexes_size('delivery_attempts')), "
                "count(DISTINCT endpoint_id), count(DISTINCT account_id) FROM delivery_attempts"
            )
        ).one()
        say(f"rows {size[0]:,}; table {size[1]}, indexes {size[2]}; "
            f"{size[3]:,} endpoints, {size[4]:,} accounts")  # fmt: skip
        for name, size_text, definition in connection.execute(
            text(
                "SELECT indexname, pg_size_pretty(pg_relation_size(indexname::regclass)), "
                "indexdef FROM pg_indexes WHERE tablename = 'delivery_attempts' ORDER BY 1"
            )
        ):
            say(f"  index {name} ({size_text}): {definition}")


def run(database: Database, spread: Spread, requests: int, explain_all: bool) -> list[str]:
    """Fill when empty, measure every kind; returns the kinds over the target."""
    migrate(database)
    with database.reading() as connection:
        present = connection.execute(text("SELECT count(*) FROM delivery_attempts")).scalar_one()
    if present == 0:
        say(f"filling {spread.rows:,} attempts ...")
        began = time.monotonic()
        fill(database, spread)
        say(f"filled in {time.monotonic() - began:.0f} s (load, index build, VACUUM ANALYZE)")
    describe(database)
    sample = Sample(database, spread, seed=13)
    with database.reading() as connection:
        backends = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one()]
    say(f"{'listing (100 a page)':<62} {'calls':>5}  {'call ms p50/p99/max':<19}  "
        f"{'server ms p50/p99':<17}  {'buffers p99':>11}  other load")  # fmt: skip
    results: list[tuple[str, Timings]] = []
    for name, make in kinds(sample):
        measure(database, make, 3)  # warm the pool and this kind's pages
        before = snapshot(backends)
        results.append((name, measure(database, make, requests)))
        report(*results[-1], other_load_pct(before, backends))
    before = snapshot(backends)
    results.append(("endpoint, hot, pages 1-N following next_cursor", walk(database, sample, 500)))
    report(*results[-1], other_load_pct(before, backends))
    missed = [name for name, t in results if percentile(t.calls, 0.99) * 1000 >= TARGET_MS]
    for name, timings in results:
        server = percentile(timings.server, 0.99) * 1000
        if timings.slowest is not None and (explain_all or server >= EXPLAIN_MS):
            say(f"\nEXPLAIN (ANALYZE, BUFFERS), {name}, its slowest request on the server:")
            say(
                "\n".join(
                    "    " + line for line in explain(database, timings.slowest, "ANALYZE, BUFFERS")
                )
            )
    return missed


def report(name: str, timings: Timings, other: float) -> None:
    calls, server = timings.calls, timings.server
    p50, p99, top = (statistics.median(calls) * 1000, percentile(calls, 0.99) * 1000,
                     max(calls) * 1000)  # fmt: skip
    flag = "" if p99 < TARGET_MS else "  OVER TARGET"
    say(f"{name:<62} {len(calls):>5}  {f'{p50:.1f} / {p99:.1f} / {top:.1f}':<19}  "
        f"{f'{statistics.median(server) * 1000:.1f} / {percentile(server, 0.99) * 1000:.1f}':<17}"
        f"  {percentile(timings.buffers, 0.99):>11,.0f}  {other:.0f}%{flag}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attempt_listing", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="attempts to fill")
    parser.add_argument("--requests", type=int, default=300, help="calls per kind of listing")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (kept afterwards)")
    parser.add_argument("--explain-all", action="store_true", help="a plan for every kind")
    args = parser.parse_args(argv)
    say(f"machine: {procstat.cpu_count()} x {procstat.cpu_model()}")
    spread = Spread(rows=args.rows)
    node = None if args.database_url else LocalPostgres().start()
    url = args.database_url or create_database(node.url if node else "", "listing")
    database = Database(DatabaseUrl.parse(url))
    try:
        missed = run(database, spread, args.requests, args.explain_all)
    finally:
        database.dispose()
        if node is not None:
            node.close()
    say("p99 under 100 ms for every kind" if not missed else f"over 100 ms: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
