"""``python -m bench.delivery_log``: what the delivery log costs and how fast it is recorded.

Two measurements, on loopback only (a throwaway RabbitMQ node, a throwaway
PostgreSQL cluster when its binaries are installed, SQLite in a temporary
directory):

* **Recorder**: a backlog of attempt records is published to the log queue,
  then ``python -m control.delivery_log`` (as deployed) is started against each
  database and timed until it has written them all (catch-up rate, peak RSS);
  then 3,000 records/s are offered for a while and the recorder's lag is read.
* **Worker drain**: one worker process (``python -m worker run``) drains a
  backlog of events to the benchmark receiver with ``DELIVERY_LOG`` off, then
  on, in alternating pairs (the machine is shared: compare each pair).

Every loop is bounded in count and time.  The machine's other load (CPU used by
processes not ours: not the worker, the receiver, the broker or this one) is
printed with every figure, and so is the CPU the worker and the broker spent
per event (steadier than the drain rate on a shared machine).  ``--py-spy DIR``
records each drain's worker with py-spy.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pika

from bench import procstat
from bench.processes import ROOT, SECRET_ENV, ReceiverProcess, WorkerProcess
from bench.stage import ACCOUNT, EVENT, _data
from broker.declarer import apply_topology, declare_topology
from broker.url import BrokerUrl
from config.logs import configure_logging
from config.subscribers import RetryPolicy, Subscriber
from config.topology import DELIVERY_LOG_EXCHANGE, delivery_log_topology
from devtools.local_processes import free_ports
from devtools.postgres_node import LocalPostgres, create_database, postgres_available
from devtools.rabbitmq_node import LocalRabbitMQ
from producer import Publisher
from wire.attempt_record import AttemptRecord, encode_batch

RECORDS_PER_BATCH = 250
SUBSCRIBER_FILE = """\
subscribers:
  - id: {id}
    account: {account}
    url: {url}
    secret: ${{{env}}}
    events: ["order.*"]
    max_in_flight: 64
retry:
  delays_seconds: [1, 1]
circuit_breaker:
  failure_threshold: 10000
security:
  allow_private_networks: true
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def other_load_pct(before: tuple[procstat.MachineCpu, float], pids: Sequence[int]) -> float:
    """CPU share of the machine used meanwhile by processes other than ``pids`` and us."""
    machine, ours = before
    now = procstat.MachineCpu.read()
    mine = sum(procstat.cpu_seconds(p) for p in pids) + procstat.cpu_seconds(os.getpid())
    busy = now.busy - machine.busy
    total = now.total - machine.total
    return 100 * max(0.0, busy - (mine - ours)) / total if total > 0 else float("nan")


def snapshot(pids: Sequence[int]) -> tuple[procstat.MachineCpu, float]:
    ours = sum(procstat.cpu_seconds(p) for p in pids) + procstat.cpu_seconds(os.getpid())
    return procstat.MachineCpu.read(), ours


def metric(port: int, name: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def records(count: int, start: datetime, tag: str) -> list[AttemptRecord]:
    """Realistic records: a 200-byte answer, the ~700-byte body on first attempts."""
    body = b'{"type":"order.created","data":{' + b'"x":1,' * 110 + b'"y":2}}'
    return [
        AttemptRecord.model_construct(
            event_id=f"evt_{tag}_{i}",
            account=ACCOUNT,
            endpoint_id="ep-bench",
            event_type=EVENT,
            attempt=1 + i % 3,
            started_at=start + timedelta(microseconds=i),
            ended_at=start + timedelta(microseconds=i + 20_000),
            duration_seconds=0.02,
            outcome="http_error" if i % 3 else "success",
            status=500 if i % 3 else 200,
            error="HTTP 500" if i % 3 else None,
            response_headers={"content-type": "application/json", "x-request-id": f"r{i}"},
            response_excerpt=b'{"error":"temporarily unavailable"}' * 6,
            disposition="retry" if i % 3 else "delivered",
            next_attempt=2 if i % 3 else None,
            dead_letter_reason=None,
            body=body if i % 3 == 0 else None,
        )
        for i in range(count)
    ]


def publish_records(url: str, items: list[AttemptRecord], rate: float | None = None) -> None:
    """Publish ``items`` as batches of 250 (confirmed), at ``rate`` records/s if given."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        apply_topology(channel, delivery_log_topology())
        channel.confirm_delivery()
        started = time.monotonic()
        for offset in range(0, len(items), RECORDS_PER_BATCH):
            if rate:
                wait = started + offset / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            channel.basic_publish(
                DELIVERY_LOG_EXCHANGE,
                "",
                encode_batch(items[offset : offset + RECORDS_PER_BATCH]),
                pika.BasicProperties(delivery_mode=2),
            )
    finally:
        connection.close()


def bench_recorder(
    url: str, database: str, name: str, backlog: int, steady_seconds: float, workdir: Path
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    say(f"- recorder on {name}: publishing a backlog of {backlog:,} records ...")
    publish_records(url, records(backlog, start, f"{name}b"))
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "RABBITMQ_URL": url,
        "DATABASE_URL": database,
        "RECORDER_METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    with (workdir / f"recorder-{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "control.delivery_log"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        before = snapshot([process.pid])
        launched = time.monotonic()
        written = 'webhook_recorder_records_total{result="written"}'
        deadline = launched + 600
        while time.monotonic() < deadline:
            try:
                if metric(port, written) >= backlog:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the recorder exited with {process.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError("the recorder did not write the backlog in 600 s")
        elapsed = time.monotonic() - launched
        cpu = procstat.cpu_seconds(process.pid)
        say(
            f"  backlog {backlog:,} records written in {elapsed:.1f} s: "
            f"{backlog / elapsed:,.0f} records/s (process start and migration included); "
            f"recorder CPU {cpu:.1f} s; peak RSS {procstat.peak_rss_mb(process.pid):.0f} MiB; "
            f"other load {other_load_pct(before, [process.pid]):.0f}%"
        )
        if steady_seconds > 0:
            offered = int(3000 * steady_seconds)
            before = snapshot([process.pid])
            publish_records(url, records(offered, start, f"{name}s"), rate=3000)
            finish = time.monotonic()
            while metric(port, written) < backlog + offered and time.monotonic() - finish < 60:
                time.sleep(0.1)
            behind = time.monotonic() - finish
            say(
                f"  steady 3,000 records/s for {steady_seconds:.0f} s: all written "
                f"{behind:.1f} s after the last publish; "
                f"peak RSS {procstat.peak_rss_mb(process.pid):.0f} MiB; "
                f"other load {other_load_pct(before, [process.pid]):.0f}%"
            )
    finally:
        process.terminate()
        process.wait(timeout=30)


class Broker:
    """Fresh vhosts on our own node, or one given vhost (``$RABBITMQ_URL``) shared."""

    def __init__(self, node: LocalRabbitMQ | None, url: str) -> None:
        self.node = node
        self.url = url

    def vhost(self, name: str) -> str:
        return self.node.add_vhost(name) if self.node is not None else self.url


def bench_worker(
    node: Broker, events: int, pairs: int, workdir: Path, profile_dir: Path | None = None
) -> None:
    secret = secrets.token_hex(16)
    receiver = ReceiverProcess(workdir, secret, "lean")
    try:
        results: dict[bool, list[Drain]] = {False: [], True: []}
        for pair in range(pairs):
            for log_on in (False, True) if pair % 2 == 0 else (True, False):
                profile = None
                if profile_dir is not None:
                    profile = profile_dir / f"worker-{'on' if log_on else 'off'}-{pair + 1}.txt"
                drain = drain_once(node, receiver, secret, events, log_on, workdir, profile)
                results[log_on].append(drain)
                say(
                    f"  pair {pair + 1}, log {'on ' if log_on else 'off'}: {events:,} events "
                    f"drained at {drain.rate:,.0f}/s; CPU per event: worker "
                    f"{drain.worker_ms:.3f} ms, broker {drain.broker_ms:.3f} ms "
                    f"(other load {drain.other:.0f}%)"
                )
        for log_on, drains in results.items():
            say(
                f"  log {'on ' if log_on else 'off'}: "
                f"{', '.join(f'{d.rate:,.0f}' for d in drains)}/s"
            )
        ratios = [on.rate / off.rate for on, off in zip(results[True], results[False], strict=True)]
        say(
            "  on/off per pair: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; median {statistics.median(ratios):.2f}"
        )
        for name in ("worker_ms", "broker_ms"):
            off = statistics.median(getattr(d, name) for d in results[False])
            on = statistics.median(getattr(d, name) for d in results[True])
            say(
                f"  median {name.removesuffix('_ms')} CPU per event: off {off:.3f} ms, "
                f"on {on:.3f} ms (+{on - off:.3f} ms)"
            )
    finally:
        receiver.close()


@dataclass(frozen=True)
class Drain:
    """One drain: events/s, CPU milliseconds per event, and the machine's other load."""

    rate: float
    worker_ms: float
    broker_ms: float
    other: float


def drain_once(
    node: Broker,
    receiver: ReceiverProcess,
    secret: str,
    events: int,
    log_on: bool,
    workdir: Path,
    profile: Path | None = None,
) -> Drain:
    tag = secrets.token_hex(3)
    url = node.vhost(f"logbench-{tag}")
    sub = Subscriber.model_validate(
        {
            "id": f"s-{tag}",
            "account": ACCOUNT,
            "url": f"{receiver.url}/s-{tag}",
            "secret": secret,
            "events": ["order.*"],
        }
    )
    declare_topology(BrokerUrl.parse(url), [sub], RetryPolicy(delays_seconds=(1.0, 1.0)))
    with Publisher(BrokerUrl.parse(url)) as publisher:
        for _ in range(0, events, 100):
            publisher.publish_many([(ACCOUNT, EVENT, _data()) for _ in range(100)])
    config = workdir / f"subscribers-{tag}.yaml"
    config.write_text(
        SUBSCRIBER_FILE.format(id=sub.id, account=ACCOUNT, url=sub.url, env=SECRET_ENV)
    )
    receiver.reset(0.0)
    worker = WorkerProcess(url, config, secret, workdir / f"worker-{tag}.log", "warning")
    worker.env["DELIVERY_LOG"] = "true" if log_on else "false"
    worker.start(timeout=60)
    spy = None if profile is None else start_py_spy(worker.pid, profile)
    broker = procstat.pid_listening_on(urlsplit(url).port or 5672) or 0
    try:
        pids = [worker.pid, receiver.pid] + ([broker] if broker else [])
        before = snapshot(pids)
        worker_cpu, broker_cpu = procstat.cpu_seconds(worker.pid), procstat.cpu_seconds(broker)
        started = time.monotonic()
        while receiver.stats()["ok"] < events and time.monotonic() - started < 300:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        worker_cpu = procstat.cpu_seconds(worker.pid) - worker_cpu
        broker_cpu = procstat.cpu_seconds(broker) - broker_cpu if broker else math.nan
        other = other_load_pct(before, pids)
    finally:
        if spy is not None:
            stop_py_spy(spy)
        worker.stop()
    per_event_ms = 1000 / events
    return Drain(events / elapsed, worker_cpu * per_event_ms, broker_cpu * per_event_ms, other)


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy (collapsed stacks to ``output``) until stop_py_spy."""
    spy = subprocess.Popen(
        ["py-spy", "record", "-r", "250", "--format", "raw", "-o", str(output), "-p", str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the drain starts
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery_log", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--tiny", action="store_true", help="tiniest sizes: proves it runs")
    parser.add_argument("--backlog", type=int, help="records in the recorder's backlog")
    parser.add_argument("--events", type=int, help="events per worker drain")
    parser.add_argument("--pairs", type=int, help="off/on pairs of worker drains")
    parser.add_argument("--sqlite-only", action="store_true", help="no PostgreSQL run")
    parser.add_argument("--skip", choices=("recorder", "worker"), action="append", default=[])
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record each worker drain with py-spy (collapsed stacks) into DIR",
    )
    args = parser.parse_args(argv)
    configure_logging("console", "warning")  # the publisher's info lines are noise here
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    backlog = args.backlog or {"tiny": 500, "quick": 5_000, "full": 100_000}[size]
    events = args.events or {"tiny": 200, "quick": 1_000, "full": 10_000}[size]
    pairs = args.pairs or (3 if size == "full" else 1)
    steady = {"tiny": 1.0, "quick": 3.0, "full": 20.0}[size]
    say(f"machine: {procstat.cpu_count()} x {procstat.cpu_model()}")
    with tempfile.TemporaryDirectory(prefix="logbench-") as folder:
        workdir = Path(folder)
        given = os.environ.get("RABBITMQ_URL", "")
        node = None if given else LocalRabbitMQ().start()
        broker = Broker(node, given or (node.url if node else ""))
        postgres: LocalPostgres | None = None
        try:
            if "recorder" not in args.skip:
                databases = [("sqlite", f"sqlite:///{workdir / 'log.db'}")]
                if postgres_available() and not args.sqlite_only:
                    postgres = LocalPostgres().start()
                    databases.append(("postgresql", create_database(postgres.url, "logbench")))
                for name, database in databases:
                    url = broker.vhost(f"recorder-{name}")
                    bench_recorder(url, database, name, backlog, steady, workdir)
            if "worker" not in args.skip:
                say(f"- one worker draining {events:,} events, delivery log off vs on ...")
                if args.py_spy is not None:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                bench_worker(broker, events, pairs, workdir, args.py_spy)
        finally:
            if postgres is not None:
                postgres.close()
            if node is not None:
                node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
