"""``python -m bench.control_plane.worker_pair BEFORE AFTER``: two trees' workers, back to back.

The full run (``python -m bench.control_plane --only worker``) declares the 10,000
endpoints' queues on a fresh node for each run, which took 3 to 20 minutes here
depending on the other load (and once left the node unable to take connections).
This declares them once, on one node, then starts the worker of each tree in turn
(A B B A ...) with ``python -m worker run`` from that tree, on the same
PostgreSQL store: time to ``/readyz``, CPU, RSS, the broker's RSS, the time to be
ready again after the broker closed its connection (a reconnect: re-declare,
the checks, every consumer again), and how long a graceful stop (SIGTERM:
cancel every consumer, drain, close) took.  A warm-up start (B) first records every
id in the subscriber registry, so that each measured start is a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import SecretStr

from bench import processes, procstat
from bench.control_plane.broker_cost import like_a_package, measure_declare
from bench.control_plane.plan import (
    NODE_OPEN_FILES,
    PLANS,
    load_1min,
    load_average,
    say,
    with_children,
)
from bench.control_plane.receiver import Receiver
from bench.control_plane.store_load import fill_store, new_secrets_key
from bench.control_plane.worker_start import WorkerRow, WorkerSetup, start_worker
from bench.processes import WorkerProcess, work_directory
from broker.url import BrokerUrl
from config.subscribers import RetryPolicy
from config.topology import build_topology
from control.store.endpoints import EndpointStore
from devtools.postgres_node import LocalPostgres
from devtools.rabbitmq_node import LocalRabbitMQ


@dataclass
class PairRow:
    tree: str
    start: WorkerRow
    reconnect_s: float = math.nan
    stop_s: float = math.nan


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _reconnect(node: LocalRabbitMQ, worker: WorkerProcess, timeout: float) -> float:
    """Close every connection on the node (only the worker's are open); seconds until ready."""
    started = time.monotonic()
    node.ctl("close_all_connections", "bench: reconnect")
    deadline = started + timeout
    while _ready(worker.metrics_port):  # not ready once it has noticed
        if time.monotonic() > deadline:
            return math.nan
        time.sleep(0.02)
    while not _ready(worker.metrics_port):
        if time.monotonic() > deadline:
            return math.nan
        time.sleep(0.05)
    return time.monotonic() - started


def _stop(worker: WorkerProcess) -> float:
    """SIGTERM; the seconds until the worker has exited (its graceful stop)."""
    if worker.process is None or worker.process.poll() is not None:
        return math.nan
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout=60)
    except Exception:
        worker.process.kill()
        worker.process.wait(timeout=10)
        return math.nan
    return time.monotonic() - started


def _measure(setup: WorkerSetup, tree: str, name: str, node: LocalRabbitMQ) -> PairRow:
    processes.ROOT = Path(tree)  # WorkerProcess starts ``python -m worker run`` there
    worker, row = start_worker(setup, name)
    pair = PairRow(tree, row)
    try:
        if not math.isnan(row.start_s):
            pair.reconnect_s = _reconnect(node, worker, setup.timeout)
            say(f"  ready again {pair.reconnect_s:.1f} s after its connections were closed")
    finally:
        pair.stop_s = _stop(worker)
        worker.stop()
    say(f"  graceful stop {pair.stop_s:.1f} s")
    return pair


def _table(rows: list[PairRow]) -> str:
    head = (
        "| start | tree | to `/readyz` s | CPU s | RSS ready MB | RSS +10 s MB | peak RSS MB "
        "| broker RSS MB | reconnect s | stop s | other load % | load 1m |"
    )
    lines = [head, "|" + "---|" * 12]
    for pair in rows:
        r = pair.start
        lines.append(
            f"| {r.start} | {pair.tree} | {r.start_s:.1f} | {r.cpu_s:.1f} | {r.rss_ready_mb:.1f} "
            f"| {r.rss_settled_mb:.1f} | {r.peak_rss_mb:.1f} | {r.broker_rss_mb:.0f} "
            f"| {pair.reconnect_s:.1f} | {pair.stop_s:.1f} | {r.other_load_pct:.0f} "
            f"| {r.load_1min:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the tree whose worker runs as A")
    parser.add_argument("after", help="the tree whose worker runs as B")
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="A B, then B A, ...")
    parser.add_argument("--keep", help="keep logs and generated files in this directory")
    args = parser.parse_args()
    trees = {"A": str(Path(args.before).resolve()), "B": str(Path(args.after).resolve())}
    plan = replace(PLANS["full"], endpoints=args.endpoints, accounts=max(1, args.endpoints // 2))
    key = new_secrets_key()
    say(f"load average at start: {load_average()}")
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(work_directory(args.keep, "bench-worker-pair-"))
        receiver = stack.enter_context(Receiver())
        postgres = stack.enter_context(LocalPostgres())
        postmaster = procstat.pid_listening_on(postgres.port)
        pids = with_children(postmaster) if postmaster else []
        store = fill_store("PostgreSQL", postgres.url, key, plan, receiver.base_url, pids)
        reader = EndpointStore.open(store.url, secrets_key=SecretStr(key))
        try:
            subscribers = [e.subscriber() for e in reader.load_all().endpoints]
        finally:
            reader.close()
        node = stack.enter_context(LocalRabbitMQ())
        like_a_package(node, max(NODE_OPEN_FILES, 10 * len(subscribers)))
        pid = procstat.pid_listening_on(node.port)
        declared = measure_declare(
            f"{len(subscribers):,} endpoints",
            BrokerUrl.parse(node.url),
            build_topology(subscribers, RetryPolicy()),
            len(subscribers),
            node,
            pid,
        )
        say(f"  declared in {declared.declare_s:.1f} s {declared.note}")
        setup = WorkerSetup(
            workdir,
            node.url,
            subscribers,
            ("PostgreSQL", store.url, key),
            plan.worker_timeout,
            plan.settle_seconds,
            node,
            pid,
        )
        # B: a tree that retries a connect the busy node times out (see broker.connection).
        rows = [_measure(setup, trees["B"], "warm-up (registry empty)", node)]
        order = "".join("AB" if n % 2 == 0 else "BA" for n in range(args.rounds))
        for n, side in enumerate(order):
            rows.append(_measure(setup, trees[side], f"{side}{n // 2 + 1} restart", node))
        say(f"load average at end: {load_average()}")
    print(f"A = {trees['A']}\nB = {trees['B']}\n{len(subscribers):,} endpoints, 1m load "
          f"{load_1min():.2f} at the end\n")  # fmt: skip
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
