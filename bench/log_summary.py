"""``python -m bench.log_summary``: how long one endpoint's summary takes on a busy day.

Fills a fresh database with ``--rows`` attempts of one endpoint spread over
the last day (plus ``--other-rows`` of other endpoints, interleaved, as a
shared table has them), then times ``AttemptReader.summary`` (as the API and
``webhook-log summary`` call it) ``--runs`` times, as the operator and as the
owning account.  SQLite in a temporary directory; PostgreSQL on a throwaway
local cluster when its binaries are installed (or ``--postgres-url``).  The
machine's busy CPU share during the runs is printed with the figures (the
database server's own work included).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import insert, text

from bench import procstat
from control.store.attempt_tables import AttemptRow
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointInput
from devtools.postgres_node import LocalPostgres, create_database, postgres_available

ACCOUNT = "acct_bench"
CHUNK = 20_000
COVER = "endpoint_id, started_at, outcome, account_id, status, duration_seconds"
OUTCOMES = ("success",) * 95 + ("http_error",) * 4 + ("timeout",)


def _rows(
    endpoint: str, others: Sequence[str], rows: int, other_rows: int
) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    rng = random.Random(20260131)  # noqa: S311 - reproducible figures, not secrets
    total = rows + other_rows
    step = timedelta(days=1) / max(total, 1)
    mine_every = total / max(rows, 1)
    next_mine = 0.0
    for index in range(total):
        at = now - timedelta(days=1) + step * index
        mine = index >= next_mine and rows > 0
        if mine:
            next_mine += mine_every
        outcome = rng.choice(OUTCOMES)
        yield {
            "event_id": f"evt_{index:09d}",
            "account_id": ACCOUNT,
            "endpoint_id": endpoint if mine else others[index % len(others)],
            "event_type": "order.created",
            "attempt": 1,
            "started_at": at,
            "ended_at": at + timedelta(milliseconds=50),
            "duration_seconds": rng.lognormvariate(-3.0, 0.6),
            "outcome": outcome,
            "status": 200 if outcome == "success" else (500 if outcome == "http_error" else None),
            "error": None,
            "response_headers": {},
            "response_excerpt": b'{"ok":true}',
            "disposition": "delivered" if outcome == "success" else "retry",
            "next_attempt": None,
            "dead_letter_reason": None,
            "recorded_at": at,
        }


def _fill(store: EndpointStore, rows: int, other_rows: int) -> str:
    data = EndpointInput.parse({"url": "https://shop.example/hooks", "events": ["order.*"]})
    endpoint = store.create_endpoint(ACCOUNT, data)[0].id
    others = [f"ep-other-{n}" for n in range(20)]
    database = store.delivery_log()._db  # the bench writes rows straight in
    chunk: list[dict[str, Any]] = []
    started = time.monotonic()
    with database.engine.begin() as connection:
        for row in _rows(endpoint, others, rows, other_rows):
            chunk.append(row)
            if len(chunk) == CHUNK:
                connection.execute(insert(AttemptRow), chunk)
                chunk = []
        if chunk:
            connection.execute(insert(AttemptRow), chunk)
    with database.engine.connect() as connection:
        if database.url.dialect == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE delivery_attempts")
            )
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
    print(f"  filled {rows + other_rows:,} rows in {time.monotonic() - started:.0f} s")
    return endpoint


def _time(store: EndpointStore, endpoint: str, runs: int, account: str | None) -> None:
    reader = store.delivery_log()
    seconds: list[float] = []
    before = procstat.MachineCpu.read()
    figures = None
    for _ in range(runs):
        started = time.perf_counter()
        figures = reader.summary(account, endpoint)
        seconds.append(time.perf_counter() - started)
    after = procstat.MachineCpu.read()
    busy = (after.busy - before.busy) / max(after.total - before.total, 1e-9) * 100
    assert figures is not None
    day = figures.last_day
    who = "operator" if account is None else f"account {account}"
    print(
        f"  summary as {who}: median {statistics.median(seconds) * 1000:.0f} ms, "
        f"max {max(seconds) * 1000:.0f} ms over {runs} runs; day: {day.attempts:,} attempts, "
        f"p50 {(day.p50_seconds or 0) * 1000:.1f} ms, p99 {(day.p99_seconds or 0) * 1000:.1f} ms "
        f"(sample {day.latency_sample:,}); machine busy {busy:.0f}% of "
        f"{procstat.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )


def _add_covering_index(store: EndpointStore) -> None:
    """An index the summary's aggregate could read without the table (not in a migration)."""
    database = store.delivery_log()._db
    started = time.monotonic()
    with database.engine.begin() as connection:
        connection.execute(text(f"CREATE INDEX ix_bench_cover ON delivery_attempts ({COVER})"))
    with database.engine.connect() as connection:
        if database.url.dialect == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE delivery_attempts")
            )
    print(f"  with an index on ({COVER}), built in {time.monotonic() - started:.0f} s:")


def _measure(url: str, args: argparse.Namespace) -> None:
    store = EndpointStore.open(
        url, secrets_key=SecretStr(SecretsKey.generate().as_text()), migrate=True
    )
    try:
        endpoint = _fill(store, args.rows, args.other_rows)
        _time(store, endpoint, 1, None)  # warm the cache once, as a running API has it
        _time(store, endpoint, args.runs, None)
        _time(store, endpoint, args.runs, ACCOUNT)
        if args.covering_index:
            _add_covering_index(store)
            _time(store, endpoint, 1, None)
            _time(store, endpoint, args.runs, None)
            _time(store, endpoint, args.runs, ACCOUNT)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement on each database; prints the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.log_summary", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="the endpoint's attempts")
    parser.add_argument("--other-rows", type=int, default=0, help="other endpoints' attempts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres-url", help="a server to create a database on")
    parser.add_argument(
        "--covering-index",
        action="store_true",
        help="then time it again with a covering index on " + COVER,
    )
    args = parser.parse_args(argv)
    print(f"{procstat.cpu_model()}, {procstat.cpu_count()} cores")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        if args.database in ("sqlite", "both"):
            print(f"SQLite: {args.rows:,} rows of one endpoint, {args.other_rows:,} others")
            _measure(f"sqlite:///{Path(folder) / 'bench.db'}", args)
        if args.database in ("postgresql", "both"):
            server = args.postgres_url
            if server is None and postgres_available():
                server = stack.enter_context(LocalPostgres()).url
            if server is None:
                print("PostgreSQL: skipped (no server binaries; give --postgres-url)")
                return 0
            print(f"PostgreSQL: {args.rows:,} rows of one endpoint, {args.other_rows:,} others")
            _measure(create_database(server, f"bench_{os.getpid()}"), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
