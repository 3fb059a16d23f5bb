"""``python -m bench``: the end-to-end benchmark (what it measures: docs/performance.md).

Everything runs on this machine and talks over loopback only: a RabbitMQ node
(``$RABBITMQ_URL``, else a throwaway ``LocalRabbitMQ``), the receiver
(``bench.receiver``, its own process, verifying every signature), worker
processes (``python -m worker run``, exactly as deployed) and the publisher
(this process, through ``producer.Publisher``).  Every load loop is bounded in
count and in time, and the run stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from bench import procstat
from bench.common import SENT_FIELD, eventually_delivered
from bench.tables import fmt as _fmt
from bench.tables import table as _table
from broker import pika_internals
from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.logs import configure_logging
from config.subscribers import RetryPolicy, Subscriber
from config.topology import dead_letter_queue, work_queue
from devtools.rabbitmq_node import LocalRabbitMQ, free_ports, rabbitmq_available
from producer import Publisher
from wire.samples import sample_data

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "BENCH_SECRET"  # noqa: S105 - the name of a variable, not a secret
EVENT = "order.created"
# Every bench endpoint belongs to this merchant (routing is per account).
ACCOUNT = "bench-merchant"


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; ``--quick`` and ``--tiny`` pick smaller ones."""

    events: int = 20_000  # flat-out and backlog scenarios
    steady_rate: float = 500.0
    steady_seconds: float = 20.0
    workers: tuple[int, ...] = (1, 2)
    fail_rate: float = 0.10
    retry_delay: float = 0.2
    sweep: tuple[int, ...] = (1, 10, 100, 1000)
    sweep_deliveries: int = 10_000
    probe_requests: int = 10_000
    single_publishes: int = 2_000
    in_flight: int = 16
    # A second value for the flat-out rows: with one subscriber, 16 requests in
    # flight leave the worker waiting on the broker's ack round trips.
    wide_in_flight: int = 64
    scenario_timeout: float = 180.0
    run_timeout: float = 1500.0
    tiny: bool = False


PLANS = {
    "full": Plan(),
    "quick": Plan(
        events=5_000,
        steady_seconds=6.0,
        sweep_deliveries=2_000,
        probe_requests=3_000,
        single_publishes=1_000,
        scenario_timeout=90.0,
        run_timeout=600.0,
    ),
    "tiny": Plan(
        events=300,
        steady_rate=200.0,
        steady_seconds=1.0,
        workers=(1,),
        sweep=(1,),
        sweep_deliveries=200,
        probe_requests=300,
        single_publishes=100,
        scenario_timeout=20.0,
        run_timeout=120.0,
        tiny=True,
    ),
}


# ------------------------------------------------------------------ results


@dataclass
class Row:
    """One line of the main table."""

    scenario: str
    workers: int
    events: int
    delivered: int = 0
    deliveries_per_s: float = math.nan
    publish_per_s: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    worker_cpu_per_1k: float = math.nan
    worker_peak_rss_mb: float = math.nan
    receiver_cpu_per_1k: float = math.nan
    broker_cpu_per_1k: float = math.nan
    other_load_pct: float = math.nan
    attempts: int = 0
    note: str = ""


@dataclass
class SweepRow:
    subscribers: int
    declare_first_s: float = math.nan
    declare_again_s: float = math.nan
    start_s: float = math.nan
    rss_ready_mb: float = math.nan
    peak_rss_mb: float = math.nan
    deliveries: int = 0
    delivered: int = 0
    deliveries_per_s: float = math.nan
    worker_cpu_per_1k: float = math.nan
    note: str = ""


@dataclass
class ProducerRow:
    mode: str
    events: int
    confirmed_per_s: float = math.nan
    call_p50_ms: float = math.nan
    call_p99_ms: float = math.nan
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    sweep: list[SweepRow] = field(default_factory=list)
    producer: list[ProducerRow] = field(default_factory=list)
    receiver_alone_per_s: float = math.nan
    receiver_alone_cpu_per_1k: float = math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------ helpers


class BenchError(RuntimeError):
    """The benchmark could not run a step (the message says which)."""


def _http(url: str, method: str = "GET", timeout: float = 10.0) -> Any:
    # Only ever http://127.0.0.1:<port>/... URLs built here.
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def _wait_until(check: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``check()`` until true; return the seconds it took, or raise after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _data(now_ns: int | None = None) -> dict[str, Any]:
    data = sample_data(EVENT)
    data[SENT_FIELD] = str(time.time_ns() if now_ns is None else now_ns)
    return data


@dataclass
class Snapshot:
    """CPU seconds of every process that matters, at one moment."""

    at: float
    workers: float
    receiver: float
    broker: float
    me: float
    machine: procstat.MachineCpu

    @classmethod
    def take(cls, workers: Sequence[int], receiver: int, broker: int | None) -> Snapshot:
        return cls(
            at=time.monotonic(),
            workers=sum(procstat.cpu_seconds(p) for p in workers),
            receiver=procstat.cpu_seconds(receiver),
            broker=procstat.cpu_seconds(broker) if broker else 0.0,
            me=procstat.cpu_seconds(os.getpid()),
            machine=procstat.MachineCpu.read(),
        )


@dataclass
class Usage:
    seconds: float
    workers: float
    receiver: float
    broker: float
    me: float
    others: float  # CPU seconds of every other process on the machine

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Usage:
        ours = (b.workers - a.workers) + (b.receiver - a.receiver) + (b.broker - a.broker)
        ours += b.me - a.me
        busy = b.machine.busy - a.machine.busy
        return cls(
            seconds=b.at - a.at,
            workers=b.workers - a.workers,
            receiver=b.receiver - a.receiver,
            broker=b.broker - a.broker,
            me=b.me - a.me,
            others=max(0.0, busy - ours),
        )

    def other_load_pct(self) -> float:
        capacity = self.seconds * procstat.cpu_count()
        return 100 * self.others / capacity if capacity > 0 else math.nan


# ------------------------------------------------------------------ processes


class ReceiverProcess:
    def __init__(self, workdir: Path, secret: str, kind: str) -> None:
        self.port = free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/webhook"
        log = (workdir / "receiver.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--port", str(self.port), "--kind", kind],
            cwd=ROOT,
            env={**os.environ, SECRET_ENV: secret},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait_until(lambda: _http(f"{self.base}/stats") is not None, 30, "the receiver")

    @property
    def pid(self) -> int:
        return self.process.pid

    def reset(self, fail_rate: float) -> None:
        _http(f"{self.base}/reset?fail_rate={fail_rate}", "POST")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = _http(f"{self.base}/stats")
        return result

    def results(self) -> dict[str, Any]:
        result: dict[str, Any] = _http(f"{self.base}/results", timeout=60)
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class WorkerProcess:
    """``python -m worker run`` with its own subscriber file and metrics port."""

    def __init__(
        self, broker_url: str, config: Path, secret: str, log_path: Path, log_level: str
    ) -> None:
        self.metrics_port = free_ports(1)[0]
        self.log_path = log_path
        self.env = {
            **os.environ,
            "RABBITMQ_URL": broker_url,
            "WEBHOOK_CONFIG": str(config),
            SECRET_ENV: secret,
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": log_level,
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = math.nan
        # What runs: the deployed command (bench.control_plane swaps it in one case).
        self.command = [sys.executable, "-m", "worker", "run"]

    def start(self, timeout: float) -> WorkerProcess:
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"worker exited with {self.process.returncode}:\n{tail}")
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except urllib.error.HTTPError:
                return False

        _wait_until(ready, timeout, "the worker's /readyz")
        self.start_seconds = time.monotonic() - started
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# The circuit breaker is set never to trip: with 10% of attempts failing at
# random it otherwise opens now and then, and its cooldown (5 s and up), not the
# retry path, would make the figures of the retry scenarios.
SUBSCRIBER_FILE = """\
subscribers:
{entries}
retry:
  delays_seconds: [{delay}, {delay}]
circuit_breaker:
  failure_threshold: 10000
security:
  allow_private_networks: true
"""

ENTRY = """\
  - id: {id}
    account: {account}
    url: {url}
    secret: ${{{env}}}
    events: ["order.*"]
    timeout_seconds: 10
    max_in_flight: {in_flight}
"""


# ------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, plan: Plan, args: argparse.Namespace, workdir: Path) -> None:
        self.plan = plan
        self.args = args
        self.workdir = workdir
        self.secret = secrets.token_hex(16)
        self.token = secrets.token_hex(2)
        self.counter = 0
        self.deadline = time.monotonic() + plan.run_timeout
        self.node: LocalRabbitMQ | None = None
        self.broker_url = os.environ.get("RABBITMQ_URL", "")
        self.broker_pid: int | None = None
        self.receiver: ReceiverProcess | None = None
        self.results = Results()
        self.retry = RetryPolicy(delays_seconds=(plan.retry_delay, plan.retry_delay))

    # --- set-up / tear-down

    def setup(self) -> None:
        if not self.broker_url:
            if not rabbitmq_available():
                raise BenchError(
                    "no broker: set RABBITMQ_URL or install rabbitmq-server "
                    "(apt-get install -y rabbitmq-server)"
                )
            say("starting a throwaway RabbitMQ node ...")
            self.node = LocalRabbitMQ().start()
            self.broker_url = self.node.url
        broker = BrokerUrl.parse(self.broker_url)
        params = broker.parameters()[0]
        if params.host not in ("127.0.0.1", "localhost", "::1"):
            raise BenchError(f"the benchmark only uses a broker on loopback, not {params.host}")
        self.broker = broker
        self.broker_shown = broker.redacted
        self.broker_pid = procstat.pid_listening_on(params.port)
        self.receiver = ReceiverProcess(self.workdir, self.secret, self.args.receiver)

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
        if self.node is not None:
            self.node.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run took longer than {self.plan.run_timeout:.0f} s; stopping")
        return left

    # --- building blocks

    def _subscribers(self, count: int, in_flight: int | None = None) -> list[Subscriber]:
        """Fresh subscribers for the next scenario (and, on our own node, a fresh vhost).

        A vhost per scenario keeps what one scenario leaves on the broker (the
        worker's subscriber registry, for one) from costing the next one anything.
        With ``$RABBITMQ_URL`` the given vhost is shared, and the ids alone differ.
        """
        self.counter += 1
        prefix = f"b{self.token}x{self.counter}"
        if self.node is not None:
            self.broker_url = self.node.add_vhost(f"bench-{prefix}")
            self.broker = BrokerUrl.parse(self.broker_url)
        assert self.receiver is not None
        return [
            Subscriber.model_validate(
                {
                    "id": f"{prefix}-{i}",
                    "account": ACCOUNT,
                    "url": f"{self.receiver.url}/{prefix}-{i}",
                    "secret": self.secret,
                    "events": ["order.*"],
                    "max_in_flight": in_flight or self.plan.in_flight,
                }
            )
            for i in range(count)
        ]

    def _config(self, subs: Sequence[Subscriber]) -> Path:
        path = self.workdir / f"subscribers-{subs[0].id.rsplit('-', 1)[0]}.yaml"
        entries = "".join(
            ENTRY.format(
                id=s.id, account=ACCOUNT, url=s.url, env=SECRET_ENV, in_flight=s.max_in_flight
            )
            for s in subs
        )
        path.write_text(
            SUBSCRIBER_FILE.format(entries=entries.rstrip("\n"), delay=self.plan.retry_delay)
        )
        return path

    def _declare(self, subs: Sequence[Subscriber]) -> float:
        started = time.monotonic()
        declare_topology(self.broker, subs, self.retry)
        return time.monotonic() - started

    def _start_workers(self, subs: Sequence[Subscriber], count: int) -> list[WorkerProcess]:
        config = self._config(subs)
        workers = []
        try:
            for index in range(count):
                log = self.workdir / f"{config.stem}-worker{index}.log"
                worker = WorkerProcess(
                    self.broker_url, config, self.secret, log, self.args.log_level
                )
                workers.append(worker)
                worker.start(timeout=min(120.0, self._left()))
        except BaseException:
            for worker in workers:
                worker.stop()
            raise
        return workers

    def _snapshot(self, workers: Sequence[WorkerProcess]) -> Snapshot:
        assert self.receiver is not None
        return Snapshot.take([w.pid for w in workers], self.receiver.pid, self.broker_pid)

    def _expected(self, ids: Sequence[str], fail_rate: float, subscribers: int) -> int:
        if fail_rate <= 0:
            return len(ids) * subscribers
        # Ids are per event; with several subscribers each delivery has the same id.
        delivered = sum(eventually_delivered(i, fail_rate, self.retry.max_attempts) for i in ids)
        return delivered * subscribers

    def _wait_delivered(self, expected: int, timeout: float) -> tuple[bool, dict[str, Any]]:
        assert self.receiver is not None
        deadline = time.monotonic() + min(timeout, self._left())
        last_ok, last_change = -1, time.monotonic()
        while True:
            stats = self.receiver.stats()
            if stats["ok"] >= expected:
                return True, stats
            if stats["ok"] != last_ok:
                last_ok, last_change = stats["ok"], time.monotonic()
            now = time.monotonic()
            # Nothing new for a long while means something is stuck: stop waiting.
            if now > deadline or now - last_change > max(15.0, self.plan.retry_delay * 20):
                return False, stats
            time.sleep(0.02)

    def _settle(self, limit: float = 20.0) -> None:
        """Wait (bounded) until the broker is nearly idle, so scenarios do not overlap."""
        if not self.broker_pid:
            time.sleep(1.0)
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = procstat.cpu_seconds(self.broker_pid)
            time.sleep(0.5)
            if procstat.cpu_seconds(self.broker_pid) - before < 0.05:  # under 10% of a core
                return

    def _cleanup_queues(self, subs: Sequence[Subscriber]) -> None:
        """Delete the scenario's queues (and with them its bindings), pipelined."""
        params = self.broker.parameters()[0]
        try:
            connection = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            say(f"  (cleanup skipped: {exc!r})")
            return
        try:
            channel = connection.channel()
            for sub in subs:
                for queue in (work_queue(sub.id), dead_letter_queue(sub.id)):
                    pika_internals.channel_under(channel).queue_delete(queue)  # nowait
            channel.queue_declare("", exclusive=True)  # a round trip: all deletes done
        except pika.exceptions.AMQPError as exc:
            say(f"  (cleanup incomplete: {exc!r})")
        finally:
            with contextlib.suppress(Exception):
                connection.close()
        self._settle()

    # --- publishing

    def _publish_batch(
        self, publisher: Publisher, count: int, ids: list[str], chunk: int = 100
    ) -> float:
        """Publish ``count`` events as lists of ``chunk`` (``publish_many``); return the seconds.

        Each list is built (and its events stamped) just before it is published.
        """
        started = time.monotonic()
        sent = 0
        while sent < count:
            self._left()
            size = min(chunk, count - sent)
            ids.extend(publisher.publish_many([(ACCOUNT, EVENT, _data()) for _ in range(size)]))
            sent += size
        return time.monotonic() - started

    def _publish_generated(self, publisher: Publisher, count: int) -> float:
        """Publish ``count`` events from a generator (each sent as it is made)."""
        started = time.monotonic()
        give_up = started + 120

        def events() -> Iterator[tuple[str, str, dict[str, Any]]]:
            for _ in range(count):
                if time.monotonic() > give_up:
                    return
                yield ACCOUNT, EVENT, _data()

        done = len(publisher.publish_many(events()))
        return done / (time.monotonic() - started)

    def _publish_steady(
        self, publisher: Publisher, rate: float, seconds: float, ids: list[str]
    ) -> float:
        """Offer ``rate`` events/s for ``seconds`` (open loop, confirms pipelined).

        Each event is stamped and handed to ``publish_many`` when it is due, so a
        slow confirm never delays the next event; returns the seconds it took.
        """
        count = max(1, int(rate * seconds))
        started = time.perf_counter()
        give_up = started + seconds * 3 + 10  # bounded in time as well as in count

        def paced() -> Iterator[tuple[str, str, dict[str, Any]]]:
            for index in range(count):
                wait = started + index / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if time.perf_counter() > give_up:
                    return
                yield ACCOUNT, EVENT, _data()

        ids.extend(publisher.publish_many(paced()))
        return time.perf_counter() - started

    def _publish_one_by_one(self, publisher: Publisher, count: int, seconds: float) -> None:
        """``publish()`` back to back (each waits for its confirm): call latency."""
        calls: list[float] = []
        started = time.perf_counter()
        for _ in range(count):
            if time.perf_counter() - started > seconds:
                break
            data = _data()
            t0 = time.perf_counter()
            publisher.publish(EVENT, data, account=ACCOUNT)
            calls.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        self.results.producer.append(
            ProducerRow(
                "publish(), one at a time",
                len(calls),
                len(calls) / elapsed,
                percentile(calls, 50) * 1000,
                percentile(calls, 99) * 1000,
            )
        )

    # --- scenarios

    def scenario(
        self,
        name: str,
        *,
        workers: int,
        mode: str,
        fail_rate: float = 0.0,
        in_flight: int | None = None,
    ) -> Row:
        """mode: "flat" (publish flat out while delivering), "steady", or "backlog"."""
        assert self.receiver is not None
        plan = self.plan
        events = plan.events if mode != "steady" else int(plan.steady_rate * plan.steady_seconds)
        row = Row(name, workers, events)
        say(f"- {name}, {workers} worker(s) ...")
        subs = self._subscribers(1, in_flight)
        self._declare(subs)
        self.receiver.reset(fail_rate)
        procs: list[WorkerProcess] = []
        ids: list[str] = []
        publisher = Publisher(self.broker)
        try:
            publisher.connect()
            if mode == "backlog":
                seconds = self._publish_batch(publisher, events, ids)
                row.publish_per_s = events / seconds
                self.results.producer.append(
                    ProducerRow("publish_many(lists of 100)", events, events / seconds)
                )
                procs = self._start_workers(subs, workers)
                before = self._snapshot(procs)
                publish_started_ns = 0
            else:
                procs = self._start_workers(subs, workers)
                before = self._snapshot(procs)
                publish_started_ns = time.time_ns()
                if mode == "flat":
                    seconds = self._publish_batch(publisher, events, ids)
                else:
                    seconds = self._publish_steady(
                        publisher, plan.steady_rate, plan.steady_seconds, ids
                    )
                    events = row.events = len(ids)
                row.publish_per_s = events / seconds
            expected = self._expected(ids, fail_rate, 1)
            done, _ = self._wait_delivered(expected, plan.scenario_timeout)
            after = self._snapshot(procs)
            row.worker_peak_rss_mb = max(procstat.peak_rss_mb(p.pid) for p in procs)
        finally:
            publisher.close()
            for proc in procs:
                proc.stop()
        results = self.receiver.results()
        row.delivered = results["ok"]
        row.attempts = results["ok"] + results["failed"]
        if not done:
            row.note = f"incomplete: {row.delivered}/{expected} delivered in time"
        if results["rejected"]:
            row.note += f" {results['rejected']} bad signatures!"
        usage = Usage.between(before, after)
        per_1k = 1000 / max(1, row.delivered)
        row.worker_cpu_per_1k = usage.workers * per_1k
        row.receiver_cpu_per_1k = usage.receiver * per_1k
        row.broker_cpu_per_1k = usage.broker * per_1k if self.broker_pid else math.nan
        row.other_load_pct = usage.other_load_pct()
        if mode == "backlog":
            span = (results["last_ns"] - results["first_ns"]) / 1e9
        else:
            span = (results["last_ns"] - publish_started_ns) / 1e9
        if row.delivered > 1 and span > 0:
            row.deliveries_per_s = row.delivered / span
        if mode != "backlog":
            latencies = [
                (r - s) / 1e6
                for s, r in zip(results["sent_ns"], results["recv_ns"], strict=True)
                if s
            ]
            row.p50_ms = percentile(latencies, 50)
            row.p95_ms = percentile(latencies, 95)
            row.p99_ms = percentile(latencies, 99)
        self._cleanup_queues(subs)
        self.results.rows.append(row)
        return row

    def sweep_point(self, count: int) -> SweepRow:
        assert self.receiver is not None
        row = SweepRow(count)
        say(f"- {count} subscriber(s) ...")
        subs = self._subscribers(count)
        row.declare_first_s = self._declare(subs)
        row.declare_again_s = self._declare(subs)
        self.receiver.reset(0.0)
        events = max(1, self.plan.sweep_deliveries // count)
        row.deliveries = events * count
        procs: list[WorkerProcess] = []
        publisher = Publisher(self.broker)
        try:
            procs = self._start_workers(subs, 1)
            row.start_s = procs[0].start_seconds
            row.rss_ready_mb = procstat.rss_mb(procs[0].pid)
            before = self._snapshot(procs)
            started_ns = time.time_ns()
            self._publish_batch(publisher, events, [], chunk=max(1, 100 // count))
            done, _ = self._wait_delivered(row.deliveries, self.plan.scenario_timeout)
            after = self._snapshot(procs)
            row.peak_rss_mb = procstat.peak_rss_mb(procs[0].pid)
        finally:
            publisher.close()
            for proc in procs:
                proc.stop()
        results = self.receiver.results()
        row.delivered = results["ok"]
        if not done:
            row.note = f"incomplete: {row.delivered}/{row.deliveries}"
        span = (results["last_ns"] - started_ns) / 1e9
        if row.delivered and span > 0:
            row.deliveries_per_s = row.delivered / span
        usage = Usage.between(before, after)
        row.worker_cpu_per_1k = usage.workers * 1000 / max(1, row.delivered)
        self._cleanup_queues(subs)
        self.results.sweep.append(row)
        return row

    def probe_receiver(self) -> None:
        """The receiver alone, hit straight by an HTTP client: is it fast enough?"""
        assert self.receiver is not None
        say("- receiver alone ...")
        self.receiver.reset(0.0)
        before = procstat.cpu_seconds(self.receiver.pid)
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.probe",
                self.receiver.url,
                "--count",
                str(self.plan.probe_requests),
                "--seconds",
                "10",
            ],
            cwd=ROOT,
            env={**os.environ, SECRET_ENV: self.secret},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        used = procstat.cpu_seconds(self.receiver.pid) - before
        result = json.loads(output.strip().splitlines()[-1])
        self.results.receiver_alone_per_s = result["rate"]
        self.results.receiver_alone_cpu_per_1k = used * 1000 / max(1, result["requests"])

    def producer_alone(self) -> None:
        """Single publish() calls into a queue nobody consumes: the call's latency."""
        say("- publish() one at a time ...")
        subs = self._subscribers(1)
        self._declare(subs)
        with Publisher(self.broker) as publisher:
            self._publish_one_by_one(publisher, self.plan.single_publishes, 30.0)
            count = self.plan.events
            rate = self._publish_generated(publisher, count)
            self.results.producer.append(ProducerRow("publish_many(generator)", count, rate))
        self._cleanup_queues(subs)

    def run(self) -> Results:
        plan = self.plan
        if self.args.only in ("all", "delivery"):
            self.deliveries()
        if self.args.only in ("all", "sweep"):
            for count in plan.sweep:
                self.sweep_point(count)
        return self.results

    def deliveries(self) -> None:
        plan = self.plan
        self.probe_receiver()
        self.producer_alone()
        self.scenario("backlog drain", workers=1, mode="backlog")
        if not plan.tiny:
            wide = plan.wide_in_flight
            self.scenario(
                f"backlog drain, in flight {wide}", workers=1, mode="backlog", in_flight=wide
            )
            self.scenario(f"flat out, in flight {wide}", workers=1, mode="flat", in_flight=wide)
        for count in plan.workers:
            self.scenario("flat out", workers=count, mode="flat")
            self.scenario(f"steady {plan.steady_rate:g}/s", workers=count, mode="steady")
        pct = f"{plan.fail_rate:.0%}"
        self.scenario(f"retries {pct}, flat out", workers=1, mode="flat", fail_rate=plan.fail_rate)
        self.scenario(
            f"retries {pct}, steady {plan.steady_rate:g}/s",
            workers=1,
            mode="steady",
            fail_rate=plan.fail_rate,
        )


# ------------------------------------------------------------------ output


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def render(results: Results, plan: Plan, args: argparse.Namespace, broker: str) -> str:
    out = io.StringIO()
    print(
        f"webhook-relay benchmark ({args.size}): {procstat.cpu_count()} cores "
        f"({procstat.cpu_model()}), Python {sys.version.split()[0]}, broker {broker}, "
        f"receiver {args.receiver}, log level {args.log_level}, "
        f"max_in_flight {plan.in_flight}, retry delays {plan.retry_delay:g} s",
        file=out,
    )
    print(
        f"receiver alone: {_fmt(results.receiver_alone_per_s)} req/s "
        f"({_fmt(results.receiver_alone_cpu_per_1k, 3)} CPU s per 1,000)",
        file=out,
    )
    print(file=out)
    headers = [
        "scenario",
        "workers",
        "events",
        "delivered",
        "deliv/s",
        "publish/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "worker CPU s/1k",
        "worker peak RSS MB",
        "receiver CPU s/1k",
        "broker CPU s/1k",
        "other load %",
    ]
    rows = [
        [
            r.scenario,
            str(r.workers),
            str(r.events),
            str(r.delivered),
            _fmt(r.deliveries_per_s),
            _fmt(r.publish_per_s),
            _fmt(r.p50_ms, 1),
            _fmt(r.p95_ms, 1),
            _fmt(r.p99_ms, 1),
            _fmt(r.worker_cpu_per_1k, 3),
            _fmt(r.worker_peak_rss_mb, 1),
            _fmt(r.receiver_cpu_per_1k, 3),
            _fmt(r.broker_cpu_per_1k, 3),
            _fmt(r.other_load_pct),
        ]
        for r in results.rows
    ]
    print(_table(headers, rows), file=out)
    notes = [f"  {r.scenario} ({r.workers} w): {r.note.strip()}" for r in results.rows if r.note]
    if results.producer:
        print(file=out)
        print(
            _table(
                ["producer", "events", "confirmed/s", "call p50 ms", "call p99 ms"],
                [
                    [
                        p.mode,
                        str(p.events),
                        _fmt(p.confirmed_per_s),
                        _fmt(p.call_p50_ms, 2),
                        _fmt(p.call_p99_ms, 2),
                    ]
                    for p in results.producer
                ],
            ),
            file=out,
        )
    if results.sweep:
        print(file=out)
        print(
            _table(
                [
                    "subscribers",
                    "declare s",
                    "re-declare s",
                    "worker start s",
                    "RSS ready MB",
                    "peak RSS MB",
                    "deliveries",
                    "delivered",
                    "deliv/s",
                    "worker CPU s/1k",
                ],
                [
                    [
                        str(s.subscribers),
                        _fmt(s.declare_first_s, 2),
                        _fmt(s.declare_again_s, 2),
                        _fmt(s.start_s, 2),
                        _fmt(s.rss_ready_mb, 1),
                        _fmt(s.peak_rss_mb, 1),
                        str(s.deliveries),
                        str(s.delivered),
                        _fmt(s.deliveries_per_s),
                        _fmt(s.worker_cpu_per_1k, 3),
                    ]
                    for s in results.sweep
                ],
            ),
            file=out,
        )
        notes += [f"  {s.subscribers} subscribers: {s.note}" for s in results.sweep if s.note]
    if notes:
        print("\nnotes:", file=out)
        print("\n".join(notes), file=out)
    return out.getvalue()


def _as_json(results: Results) -> dict[str, Any]:
    from dataclasses import asdict

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(asdict(results))  # type: ignore[no-any-return]


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="wh-bench-") as tmp:
            yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end benchmark: broker, receiver, worker processes, publisher, "
        "all on this machine over loopback. Prints one set of tables.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const="quick",
        help="smaller run (about a minute or two)",
    )
    size.add_argument(
        "--tiny",
        dest="size",
        action="store_const",
        const="tiny",
        help="smallest run (a few hundred events, 1 subscriber; the smoke test)",
    )
    parser.set_defaults(size="full")
    parser.add_argument("--events", type=int, help="events per flat-out scenario")
    parser.add_argument("--rate", type=float, help="steady offered load, events/s")
    parser.add_argument("--steady-seconds", type=float, help="length of a steady scenario")
    parser.add_argument("--subscribers", help="sweep points, e.g. 1,10,100,1000")
    parser.add_argument(
        "--only",
        choices=("all", "delivery", "sweep"),
        default="all",
        help="run only the delivery scenarios or only the subscriber sweep",
    )
    parser.add_argument("--in-flight", type=int, help="max_in_flight of each subscriber")
    parser.add_argument("--receiver", choices=("lean", "aiohttp"), default="lean")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the workers' LOG_LEVEL (info logs every delivery, the default)",
    )
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="keep logs and subscriber files in this directory")
    args = parser.parse_args(argv)

    plan = PLANS[args.size]
    overrides: dict[str, Any] = {}
    if args.events:
        overrides["events"] = args.events
    if args.rate:
        overrides["steady_rate"] = args.rate
    if args.steady_seconds:
        overrides["steady_seconds"] = args.steady_seconds
    if args.subscribers:
        overrides["sweep"] = tuple(int(x) for x in args.subscribers.split(","))
    if args.in_flight:
        overrides["in_flight"] = args.in_flight
    if overrides:
        from dataclasses import replace

        plan = replace(plan, **overrides)

    # The producer logs like its CLI does: warnings and errors only.
    configure_logging("json", "warning", stream=sys.stderr)
    with _workdir(args.keep) as workdir:
        bench = Bench(plan, args, workdir)
        try:
            bench.setup()
            results = bench.run()
        except BenchError as exc:
            say(f"bench: error: {exc}")
            return 1
        finally:
            bench.close()
    text = render(results, plan, args, bench.broker_shown)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(_as_json(results), indent=2))
    return 0
