"""``webhook-api`` as deployed (``python -m cli.api``, its own process) under concurrent clients.

Each row sends a fixed number of GETs from ``clients`` aiohttp clients at once
(closed loop: each sends its next request when the previous answer is in), and
times every request from send to the end of the body.  So with 8 clients the
API runs flat out and its latency includes waiting behind the other clients'
requests; the one-client row shows a request's own time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat
from bench.control_plane.plan import (
    BenchError,
    Load,
    Plan,
    load_1min,
    percentile,
    say,
    wait_until,
    with_children,
)
from bench.control_plane.store_load import BIG_ACCOUNT, LoadedStore
from devtools.local_processes import free_ports

ROOT = Path(__file__).resolve().parents[2]
# Variables of the caller's environment that would change what the server does.
_CLEARED = ("DATABASE_URL", "SECRETS_KEY", "SECRETS_KEY_FILE", "API_TOKENS", "API_TOKENS_FILE")


class ApiServer:
    """One ``webhook-api`` process on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        database_url: str,
        secrets_key: str,
        broker_url: str,
        workers: int = 1,
    ) -> None:
        self.port = free_ports(1)[0]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.log_path = workdir / f"api-{name}.log"
        base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        self.env = {
            **base,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "API_TOKENS": self.token,
            "DATABASE_URL": database_url,
            "SECRETS_KEY": secrets_key,
            "RABBITMQ_URL": broker_url,  # change notices (only writes send any)
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # endpoints point at 127.0.0.1
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "API_WORKERS": str(workers),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> ApiServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.api"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"webhook-api exited with {self.process.returncode}:\n{tail}")
            try:
                return self.request("GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout, "webhook-api's /healthz", every=0.1)
        return self

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request with the bearer token; (status, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        return status, json.loads(raw) if raw else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class ApiRow:
    backend: str
    request: str
    clients: int
    processes: int = 1  # API_WORKERS
    requests: int = 0
    errors: int = 0
    per_second: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    api_cpu_ms: float = math.nan  # API process CPU per request
    api_rss_mb: float = math.nan
    other_load_pct: float = math.nan
    load_1min: float = math.nan
    short: str = ""  # the request's name in the targets table


async def _drive(
    server: ApiServer, paths: list[str], clients: int, seconds: float
) -> tuple[list[float], int, float]:
    """Send ``paths`` from ``clients`` concurrent clients; (latencies s, errors, elapsed s)."""
    latencies: list[float] = []
    errors = 0
    pending = iter(paths)
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(server.base_url, headers=headers, connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            for path in pending:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                async with http.get(path) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - started


def _row(
    server: ApiServer,
    row: ApiRow,
    paths: list[str],
    plan: Plan,
    db_pids: Callable[[], list[int]],
) -> ApiRow:
    asyncio.run(_drive(server, paths[:50], row.clients, plan.row_seconds))  # warm-up
    # The server's processes: itself, and its workers when API_WORKERS > 1.
    api_pids = with_children(server.pid)
    cpu_before = sum(procstat.cpu_seconds(pid) for pid in api_pids)
    before = Load.read([*api_pids, *db_pids()])
    latencies, errors, elapsed = asyncio.run(_drive(server, paths, row.clients, plan.row_seconds))
    row.other_load_pct = before.others_pct(Load.read([*api_pids, *db_pids()]))
    row.load_1min = load_1min()
    row.requests, row.errors = len(latencies), errors
    row.per_second = len(latencies) / elapsed if elapsed > 0 else math.nan
    row.p50_ms, row.p95_ms, row.p99_ms, row.max_ms = (
        percentile(latencies, q) * 1000 for q in (50, 95, 99, 100)
    )
    cpu = sum(procstat.cpu_seconds(pid) for pid in api_pids) - cpu_before
    row.api_cpu_ms = cpu * 1000 / max(1, row.requests)
    row.api_rss_mb = sum(procstat.rss_mb(pid) for pid in api_pids)
    say(
        f"  {row.request}, {row.clients} client(s), {row.processes} process(es): "
        f"{row.per_second:.0f}/s, "
        f"p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, {row.errors} errors"
    )
    return row


def measure_api(
    workdir: Path,
    store: LoadedStore,
    secrets_key: str,
    plan: Plan,
    db_pids: Callable[[], list[int]],
) -> list[ApiRow]:
    """Start ``webhook-api`` on ``store`` and time list and get requests."""
    rng = random.Random(1)  # noqa: S311 - the same requests on every backend, not secrets
    regular = store.regular_accounts
    n = plan.requests
    prefix = "/v1/accounts"
    lists = [f"{prefix}/{rng.choice(regular)}/endpoints" for _ in range(n)]
    pages = [f"{prefix}/{BIG_ACCOUNT}/endpoints?limit=100"] * n
    gets = [f"{prefix}/{a}/endpoints/{e}" for a, e in rng.choices(store.endpoints, k=n)]
    page_size = min(100, plan.big_account)
    per_account = (len(store.endpoints) - plan.big_account) / max(1, len(regular))
    rows = [
        (f"list, {per_account:.0f} per account", "list", lists),
        (f"list, page of {page_size}", "page", pages),
        ("get", "get", gets),
    ]
    results: list[ApiRow] = []
    for workers in dict.fromkeys((1, plan.api_workers)):
        say(f"- webhook-api on {store.backend}, {workers} process(es) ...")
        # The API's broker (change notices) is never contacted: GETs send no notices.
        server = ApiServer(
            workdir,
            f"{store.backend.lower()}-{workers}",
            store.url,
            secrets_key,
            "amqp://127.0.0.1:1/",
            workers=workers,
        )
        try:
            server.start()
            for name, short, paths in rows:
                row = ApiRow(store.backend, name, plan.clients, workers, short=short)
                results.append(_row(server, row, paths, plan, db_pids))
            if workers == 1:
                # Fewer concurrent clients: what p99 is when the API is not flat out.
                for clients in plan.fewer_clients:
                    for name, short, paths in rows:
                        row = ApiRow(store.backend, name, clients, short=f"{short}, {clients}")
                        results.append(_row(server, row, paths, plan, db_pids))
                one = ApiRow(store.backend, "get", 1, short="get, 1 client")
                results.append(_row(server, one, gets[: max(50, n // 4)], plan, db_pids))
        finally:
            server.stop()
    return results
