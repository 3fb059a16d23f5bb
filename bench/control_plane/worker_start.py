"""A worker with every endpoint: ``python -m worker run``, time to ``/readyz`` and its memory.

Where the worker gets its endpoints depends on this tree: when it has a
store-backed subscriber source (``worker.subscriber_source.StoreSource``) the
worker runs with ``DATABASE_URL`` on the run's store; otherwise it gets a
generated subscriber file with the same endpoints (ids, accounts, patterns),
and the output says which.  Either way the queues already exist (declared
beforehand, as on any restart), so the start-up measured is a restart's.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import procstat
from bench.control_plane.broker_cost import Memory, settle
from bench.control_plane.plan import BenchError, Load, load_1min, say
from bench.processes import SECRET_ENV, WorkerProcess
from broker.url import BrokerUrl
from config import yaml_reader
from config.subscribers import Subscriber
from devtools.rabbitmq_node import LocalRabbitMQ
from worker.pause import paused_among
from worker.registry import reconcile_registry

ROOT = Path(__file__).resolve().parents[2]
# YAML values (keys included) the generated file has per subscriber, and around them.
_VALUES_PER_SUBSCRIBER = 12
_VALUES_AROUND = 7
_STORE_VARIABLES = ("DATABASE_URL", "SECRETS_KEY", "SECRETS_KEY_FILE")


def store_backed_workers() -> bool:
    """Whether the workers of this tree (the one ``python -m worker`` runs from here) can
    take their endpoints from the store.

    The module must come from this tree: an editable install of another checkout
    may otherwise supply a ``worker.subscriber_source`` that this tree's worker
    never imports.
    """
    try:
        spec = importlib.util.find_spec("worker.subscriber_source")
    except ImportError:
        return False
    if spec is None or spec.origin is None or not Path(spec.origin).resolve().is_relative_to(ROOT):
        return False
    return hasattr(importlib.import_module("worker.subscriber_source"), "StoreSource")


@dataclass
class WorkerRow:
    start: str  # "first start" (the registry empty) or "restart"
    source: str
    endpoints: int
    start_s: float = math.nan
    cpu_s: float = math.nan  # the worker's CPU seconds until ready
    rss_ready_mb: float = math.nan
    rss_settled_mb: float = math.nan
    peak_rss_mb: float = math.nan
    broker_rss_mb: float = math.nan  # with the worker's consumers
    metrics_series: int = 0  # samples on one /metrics page (what Prometheus scrapes)
    metrics_kb: float = math.nan
    metrics_ms: float = math.nan
    other_load_pct: float = math.nan
    load_1min: float = math.nan
    note: str = ""


@dataclass
class PhaseRow:
    """Steps of this tree's worker start, each timed on its own (diagnosis)."""

    step: str
    seconds: float


def write_subscriber_file(path: Path, subscribers: list[Subscriber]) -> bool:
    """Write the file; True when it is beyond what the file reader accepts."""
    entries = [
        f"  - id: {s.id}\n    account: {s.account}\n    url: {s.url}\n"
        f'    secret: ${{{SECRET_ENV}}}\n    events: ["order.*"]\n'
        for s in subscribers
    ]
    path.write_text(
        "subscribers:\n" + "".join(entries) + "security:\n  allow_private_networks: true\n"
    )
    values = _VALUES_AROUND + _VALUES_PER_SUBSCRIBER * len(subscribers)
    return values > yaml_reader.MAX_VALUES


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker start of the run shares."""

    workdir: Path
    broker_url: str
    subscribers: list[Subscriber]
    store: tuple[str, str, str] | None  # (backend, DATABASE_URL, SECRETS_KEY); None: the file
    timeout: float
    settle_seconds: float
    node: LocalRabbitMQ | None
    broker_pid: int | None


def start_worker(setup: WorkerSetup, start: str) -> tuple[WorkerProcess, WorkerRow]:
    """Start one worker and measure it (``start`` names this start in the table and its log).
    The worker is left running."""
    subscribers, workdir = setup.subscribers, setup.workdir
    config = workdir / "subscribers-control-plane.yaml"
    log = workdir / f"worker-{start.split()[0]}.log"
    worker = WorkerProcess(setup.broker_url, config, "bench-secret", log, "info")
    if setup.store is not None:
        backend, database_url, secrets_key = setup.store
        row = WorkerRow(start, f"endpoint store ({backend}, DATABASE_URL)", len(subscribers))
        worker.env.update(
            DATABASE_URL=database_url,
            SECRETS_KEY=secrets_key,
            WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        )
    else:
        source = "subscriber file (workers here do not read the store)"
        row = WorkerRow(start, source, len(subscribers))
        for name in _STORE_VARIABLES:
            worker.env.pop(name, None)
        if write_subscriber_file(config, subscribers):
            worker.command = [sys.executable, "-m", "bench.control_plane.big_file_worker"]
            row.note = (
                f"the file reader refuses more than {yaml_reader.MAX_VALUES:,} YAML values "
                f"(~{yaml_reader.MAX_VALUES // _VALUES_PER_SUBSCRIBER:,} subscribers): "
                "started with that limit raised (bench.control_plane.big_file_worker)"
            )
    say(f"- worker, {start}: {len(subscribers):,} endpoints from the {row.source} ...")
    broker_pid, node = setup.broker_pid, setup.node
    pids = [broker_pid] if broker_pid else []
    load = Load.read(pids)
    try:
        worker.start(timeout=setup.timeout)
    except BenchError as exc:
        worker.stop()
        row.note = f"{row.note}; {exc}".strip("; ")
        return worker, row
    row.start_s = worker.start_seconds
    row.cpu_s = procstat.cpu_seconds(worker.pid)
    row.rss_ready_mb = procstat.rss_mb(worker.pid)
    row.other_load_pct = load.others_pct(Load.read([*pids, worker.pid]))
    row.load_1min = load_1min()
    time.sleep(setup.settle_seconds)
    row.rss_settled_mb = procstat.rss_mb(worker.pid)
    row.peak_rss_mb = procstat.peak_rss_mb(worker.pid)
    say(f"  ready after {row.start_s:.1f} s, RSS {row.rss_ready_mb:.0f} MB")
    scrape(worker.metrics_port, row)
    settle(broker_pid, limit=20.0)
    row.broker_rss_mb = Memory.of(node, broker_pid).rss
    return worker, row


def scrape(port: int, row: WorkerRow) -> None:
    """One Prometheus scrape of the worker: its size, its samples, how long it took."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        page = response.read()
    row.metrics_ms = (time.monotonic() - started) * 1000
    row.metrics_kb = len(page) / 1024
    row.metrics_series = sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))


def time_phases(broker: BrokerUrl, subscribers: list[Subscriber]) -> list[PhaseRow]:
    """This tree's start-up checks, one by one, on the same endpoints (worker stopped)."""
    ids = [s.id for s in subscribers]
    rows = []
    for step, call in (
        ("pause-marker check (worker.pause.paused_among)", lambda: paused_among(broker, ids)),
        (
            "subscriber registry, full check (worker.registry.reconcile_registry)",
            lambda: reconcile_registry(broker, ids),
        ),
    ):
        started = time.monotonic()
        call()
        rows.append(PhaseRow(step, time.monotonic() - started))
    return rows
