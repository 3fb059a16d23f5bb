"""``python -m bench.control_plane [--quick | --tiny]``: the run, in order.

1. the endpoint store filled on SQLite and on a throwaway PostgreSQL 15 cluster;
2. ``webhook-api`` on each, under concurrent clients;
3. the broker's cost per endpoint, on one fresh throwaway RabbitMQ node per size;
4. a worker with every endpoint, on a node holding all their queues
   (``$RABBITMQ_URL`` when set, on loopback; else a throwaway node): its first
   start, then a restart;
5. with store-backed workers only: changes made through the API, timed until
   that worker delivers accordingly.

Everything listens on 127.0.0.1, every step is bounded in time, and every
process and node started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPError
from pydantic import SecretStr

from bench import procstat
from bench.control_plane.api_load import ApiServer, measure_api
from bench.control_plane.broker_cost import like_a_package, measure_declare, measure_sizes
from bench.control_plane.changes import measure_changes
from bench.control_plane.plan import (
    NODE_OPEN_FILES,
    PLANS,
    BenchError,
    Plan,
    load_average,
    open_files_limit,
    say,
    with_children,
)
from bench.control_plane.receiver import Receiver
from bench.control_plane.report import Results, render
from bench.control_plane.store_load import (
    BIG_ACCOUNT,
    LoadedStore,
    fill_store,
    new_secrets_key,
)
from bench.control_plane.worker_start import (
    WorkerSetup,
    start_worker,
    store_backed_workers,
    time_phases,
)
from bench.processes import work_directory
from broker.url import BrokerUrl
from config.errors import WebhookError
from config.logs import configure_logging
from config.subscribers import RetryPolicy
from config.topology import build_topology
from control.store.endpoints import EndpointStore
from devtools.postgres_node import LocalPostgres, postgres_available
from devtools.rabbitmq_node import LocalRabbitMQ, RabbitMQNodeError, rabbitmq_available

NOT_IN_TREE = "skipped: workers in this tree do not read the store"


class Run:
    def __init__(self, plan: Plan, args: argparse.Namespace, workdir: Path) -> None:
        self.plan = plan
        self.args = args
        self.workdir = workdir
        self.key = new_secrets_key()
        self.results = Results(args.size, plan, load_average())
        self.stack = contextlib.ExitStack()
        self.stores: list[tuple[LoadedStore, Callable[[], list[int]]]] = []

    def wanted(self, part: str) -> bool:
        return self.args.only in ("all", part)

    def run(self) -> Results:
        started = time.monotonic()
        self.results.open_files = open_files_limit()
        with self.stack:
            receiver = self.stack.enter_context(Receiver())
            if self.wanted("api") or self.wanted("worker"):
                self.fill_stores(receiver.base_url)
            if self.wanted("api"):
                for store, pids in self.stores:
                    self.part(f"webhook-api on {store.backend}", self.api_part, store, pids)
            if self.wanted("broker"):
                if rabbitmq_available():
                    self.results.broker += measure_sizes(
                        self.plan.broker_sizes, self.plan.classic_size
                    )
                else:
                    self.results.notes.append("broker cost skipped: rabbitmq-server not installed")
            if self.wanted("worker"):
                self.part("the worker part", self.worker_part, receiver)
        self.results.load_at_end = load_average()
        self.results.seconds = time.monotonic() - started
        return self.results

    def part(self, name: str, step: Callable[..., None], *args: Any) -> None:
        """Run one part; its failure is noted and the run goes on with the next."""
        try:
            step(*args)
        except (
            BenchError,
            WebhookError,
            AMQPError,
            AMQPConnectorException,
            RabbitMQNodeError,
            subprocess.TimeoutExpired,
        ) as exc:
            say(f"  {name} failed: {exc!r}")
            self.results.notes.append(f"{name} failed: {exc!r}")

    def api_part(self, store: LoadedStore, pids: Callable[[], list[int]]) -> None:
        self.results.api += measure_api(self.workdir, store, self.key, self.plan, pids)

    def fill_stores(self, endpoints_at: str) -> None:
        """The run's endpoints (pointing at ``endpoints_at``) in SQLite, then PostgreSQL."""
        database = self.workdir / "store.db"
        for leftover in (database, *database.parent.glob("store.db-*")):
            leftover.unlink(missing_ok=True)  # a kept directory's previous run
        url = f"sqlite:///{database}"
        self.stores.append((self._fill("SQLite", url, endpoints_at, list), list))
        if not postgres_available():
            self.results.notes.append("PostgreSQL skipped: no PostgreSQL 15 server binaries")
            return
        say("- starting a throwaway PostgreSQL 15 cluster ...")
        postgres = self.stack.enter_context(LocalPostgres())
        postmaster = procstat.pid_listening_on(postgres.port)

        def pids() -> list[int]:
            return with_children(postmaster) if postmaster else []

        self.stores.append((self._fill("PostgreSQL", postgres.url, endpoints_at, pids), pids))

    def _fill(
        self, backend: str, url: str, endpoints_at: str, pids: Callable[[], list[int]]
    ) -> LoadedStore:
        loaded = fill_store(backend, url, self.key, self.plan, endpoints_at, pids())
        self.results.stores.append(loaded)
        return loaded

    def broker(self, endpoints: int) -> tuple[str, LocalRabbitMQ | None, int | None]:
        """(URL, our node or None, the broker's pid if visible) for the worker part."""
        url = os.environ.get("RABBITMQ_URL", "")
        if url:
            params = BrokerUrl.parse(url).parameters()[0]
            if params.host not in ("127.0.0.1", "localhost", "::1"):
                raise BenchError(f"the benchmark only uses a broker on loopback, not {params.host}")
            return url, None, procstat.pid_listening_on(params.port)
        if not rabbitmq_available():
            raise BenchError("no broker: set RABBITMQ_URL or install rabbitmq-server")
        say("- starting a throwaway RabbitMQ node for the worker ...")
        node = self.stack.enter_context(LocalRabbitMQ())
        # Once a worker has consumed them, quorum queues count more file handles
        # than the 3 each reserves: a restart of a 10,000-endpoint worker found a
        # node limited to 65,436 full (no new connection).  The worker's node gets
        # the limit docs/scaling.md recommends (at least 80,000 for 10,000).
        open_files = max(NODE_OPEN_FILES, 10 * endpoints)
        like_a_package(node, open_files)
        if open_files > NODE_OPEN_FILES and open_files_limit() < open_files:
            self.results.notes.append(
                f"the worker's node: file-handle limit raised to {open_files - 100:,} "
                "(file_handle_cache:set_limit), 10 per endpoint"
            )
        return node.url, node, procstat.pid_listening_on(node.port)

    def worker_part(self, receiver: Receiver) -> None:
        plan, results = self.plan, self.results
        store = self.stores[-1][0]  # PostgreSQL when there is one
        reader = EndpointStore.open(store.url, secrets_key=SecretStr(self.key))
        try:
            subscribers = [e.subscriber() for e in reader.load_all().endpoints]
        finally:
            reader.close()
        url, node, pid = self.broker(len(subscribers))
        broker = BrokerUrl.parse(url)
        label = f"{len(subscribers):,} endpoints (the worker's node)"
        topology = build_topology(subscribers, RetryPolicy())
        results.broker.append(measure_declare(label, broker, topology, len(subscribers), node, pid))
        in_tree = store_backed_workers()
        setup = WorkerSetup(
            self.workdir,
            url,
            subscribers,
            (store.backend, store.url, self.key) if in_tree else None,
            plan.worker_timeout,
            plan.settle_seconds,
            node,
            pid,
        )
        # The first start also records every id in the (empty) subscriber registry;
        # the restart is what every later start costs.
        first, row = start_worker(setup, "first start")
        first.stop()
        results.workers.append(row)
        worker, row = start_worker(setup, "restart")
        results.workers.append(row)
        try:
            if not in_tree:
                results.changes_skipped = NOT_IN_TREE
            elif math.isnan(row.start_s):
                results.changes_skipped = "skipped: the worker did not get ready"
            else:
                api = ApiServer(self.workdir, "changes", store.url, self.key, url).start()
                try:
                    tag = secrets.token_hex(3)
                    existing = [e for e in store.endpoints if e[0] != BIG_ACCOUNT]
                    results.changes = measure_changes(
                        api,
                        broker,
                        receiver,
                        worker.log_path,
                        existing[: plan.changes],
                        plan.creates,
                        plan.change_timeout,
                        tag,
                    )
                finally:
                    api.stop()
        finally:
            worker.stop()
        results.phases = time_phases(broker, subscribers)


def _clean(value: Any) -> Any:
    """NaN as null, for JSON; and no database URLs (they may hold a password)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in ("url", "endpoints")}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _client_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or not all(1 <= count <= 64 for count in counts):
        raise argparse.ArgumentTypeError("numbers from 1 to 64, separated by commas")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.control_plane",
        description="The control plane at scale: the endpoint store, webhook-api, the broker's "
        "cost per endpoint, a worker with every endpoint, and how soon workers see a change. "
        "Everything on this machine over loopback; prints tables (docs/scaling.md).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const="quick",
        help="1,000 endpoints over 500 accounts (a few minutes)",
    )
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                      help="40 endpoints (the smoke test)")  # fmt: skip
    parser.set_defaults(size="full")
    parser.add_argument("--only", choices=("all", "api", "broker", "worker"), default="all",
                        help="run one part (the store is filled for api and worker)")  # fmt: skip
    parser.add_argument("--clients", type=_client_counts, metavar="N[,N...]",
                        help="concurrent API clients (default: 8; 4 for --tiny); more numbers "
                        "run the one-process rows again with that many")  # fmt: skip
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="keep logs and generated files in this directory")
    args = parser.parse_args(argv)

    # SIGTERM ends the run like Ctrl-C: every node, cluster and process started is stopped.
    signal.signal(signal.SIGTERM, _terminate)
    # The publisher and the store log like the CLIs do at most: errors only here.
    configure_logging("json", "error", stream=sys.stderr)
    with work_directory(args.keep, "wh-control-plane-") as workdir:
        plan = PLANS[args.size]
        if args.clients is not None:
            plan = replace(plan, clients=args.clients[0], fewer_clients=args.clients[1:])
        run = Run(plan, args, workdir)
        try:
            results = run.run()
        except (BenchError, WebhookError) as exc:
            say(f"bench.control_plane: error: {exc}")
            return 1
    print(render(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(_clean(asdict(results)), indent=2))
    return 0
