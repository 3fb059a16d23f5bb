"""``python -m bench.resend``: how long a large resend takes and what memory it needs.

On loopback only: a throwaway RabbitMQ node (or ``$RABBITMQ_URL``), SQLite in a
temporary directory and a throwaway PostgreSQL cluster when its binaries are
installed.  The log holds ``--events`` failed events (1 KiB bodies) of one
endpoint among ``--noise`` delivered ones of the same endpoint; then a filter
resend (``outcome``) and a recover select the failed ones, at the API's
largest limit, into the endpoint's queue (no worker: the copies wait there).
Printed: seconds, events/s, peak RSS before and after, and the machine's
other load meanwhile.  Every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika

from bench import procstat
from broker.declarer import apply_topology
from broker.url import BrokerUrl
from config.logs import configure_logging
from config.subscribers import RetryPolicy, Subscriber
from config.topology import build_topology, work_queue
from control.delivery_log.resend import resend
from control.delivery_log.resend_request import MAX_RESEND, Matching, Recovery, ResendReport
from control.store.attempts import AttemptStore
from control.store.resend_selection import EventFilter, ResendScope
from devtools.postgres_node import LocalPostgres, create_database, postgres_available
from devtools.rabbitmq_node import LocalRabbitMQ
from wire.attempt_record import AttemptRecord

ENDPOINT = "bench-shop"
ACCOUNT = "bench"
WRITE_BATCH = 2_000


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def attempts(
    count: int, first: int, start: datetime, tag: str, *, failed: bool
) -> list[AttemptRecord]:
    body = b'{"event":"order.created","data":{"pad":"' + b"x" * 1000 + b'"},"timestamp":"t"}'
    made = []
    for i in range(first, first + count):
        began = start + timedelta(milliseconds=i)
        made.append(
            AttemptRecord.model_construct(
                event_id=f"{tag}-{i:07}",
                account=ACCOUNT,
                endpoint_id=ENDPOINT,
                event_type="order.created",
                attempt=1,
                started_at=began,
                ended_at=began + timedelta(milliseconds=20),
                duration_seconds=0.02,
                outcome="http_error" if failed else "success",
                status=500 if failed else 200,
                error=None,
                response_headers={},
                response_excerpt=b"",
                disposition="dead_lettered" if failed else "delivered",
                next_attempt=None,
                dead_letter_reason="exhausted" if failed else None,
                body=body,
            )
        )
    return made


def fill(store: AttemptStore, events: int, noise: int, start: datetime) -> None:
    # A batch at a time, so that the peak RSS printed is the resend's, not the fill's.
    for tag, count, failed in (("noise", noise, False), ("failed", events, True)):
        for first in range(0, count, WRITE_BATCH):
            size = min(WRITE_BATCH, count - first)
            store.write(attempts(size, first, start, tag, failed=failed))


def timed(name: str, url: str, run: Callable[[], ResendReport], database: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_purge(work_queue(ENDPOINT))
    finally:
        connection.close()
    rss_before = peak_rss_mb()
    machine, ours = procstat.MachineCpu.read(), procstat.cpu_seconds(os.getpid())
    began = time.monotonic()
    report = run()
    seconds = time.monotonic() - began
    now = procstat.MachineCpu.read()
    mine = procstat.cpu_seconds(os.getpid()) - ours
    total = now.total - machine.total
    other = 100 * max(0.0, (now.busy - machine.busy) - mine) / total if total > 0 else float("nan")
    published = report.count("published")
    print(
        f"{database:10} {name:8} published {published:6,} in {seconds:6.2f} s "
        f"({published / seconds:7,.0f}/s)  peak RSS {rss_before:6.1f} -> {peak_rss_mb():6.1f} MB"
        f"  limit_reached={report.limit_reached}  other load {other:4.0f}%",
        flush=True,
    )


def bench_database(url: str, database_url: str, name: str, events: int, noise: int) -> None:
    store = AttemptStore.open(database_url, migrate=True)
    try:
        start = datetime.now(UTC) - timedelta(hours=2)
        say(f"- {name}: writing {noise:,} delivered and {events:,} failed attempts ...")
        fill(store, events, noise, start)
        broker = BrokerUrl.parse(url)
        scope = ResendScope(ENDPOINT, ACCOUNT)
        limit = min(events, MAX_RESEND)
        where = EventFilter(outcome="http_error")
        timed(
            "filter",
            url,
            lambda: resend(broker, store.database, scope, Matching(where, limit)),
            name,
        )
        timed(
            "recover",
            url,
            lambda: resend(broker, store.database, scope, Recovery(start, limit)),
            name,
        )
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resend", description=__doc__)
    parser.add_argument("--events", type=int, default=MAX_RESEND, help="failed events to resend")
    parser.add_argument("--noise", type=int, default=200_000, help="other attempts there")
    parser.add_argument("--sqlite-only", action="store_true", help="no PostgreSQL run")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    say(f"machine: {procstat.cpu_count()} x {procstat.cpu_model()}")
    with tempfile.TemporaryDirectory(prefix="resendbench-") as folder:
        given = os.environ.get("RABBITMQ_URL", "")
        node = None if given else LocalRabbitMQ().start()
        postgres: LocalPostgres | None = None
        try:
            url = given or (node.url if node is not None else "")
            shop = Subscriber.model_validate(
                {
                    "id": ENDPOINT,
                    "account": ACCOUNT,
                    "url": "https://shop.example/hook",
                    "secret": "s" * 32,
                    "events": ["order.*"],
                }
            )
            connection = pika.BlockingConnection(pika.URLParameters(url))
            try:
                topology = build_topology([shop], RetryPolicy(delays_seconds=(1.0,)))
                apply_topology(connection.channel(), topology)
            finally:
                connection.close()
            databases = [("sqlite", f"sqlite:///{Path(folder) / 'log.db'}")]
            if postgres_available() and not args.sqlite_only:
                postgres = LocalPostgres().start()
                databases.append(("postgresql", create_database(postgres.url, "resendbench")))
            for name, database in databases:
                bench_database(url, database, name, args.events, args.noise)
        finally:
            if postgres is not None:
                postgres.close()
            if node is not None:
                node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
