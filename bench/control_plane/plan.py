"""Sizes of a control-plane run, and the small helpers every part of it shares."""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench import procstat
from bench.processes import BenchError

__all__ = ["BenchError", "Load", "Plan", "percentile", "say", "wait_until"]


@dataclass(frozen=True)
class Plan:
    """What one run measures; ``--quick`` and ``--tiny`` pick smaller sizes."""

    endpoints: int = 10_000
    accounts: int = 5_000
    # One account holds this many of the endpoints, so that one list row reads a
    # full page (the API's default page is 100); the rest are spread evenly.
    big_account: int = 100
    requests: int = 4_000  # per API row (the one-client row makes a quarter)
    clients: int = 8
    api_workers: int = 2  # the concurrent rows again with this many API processes (1: not)
    fewer_clients: tuple[int, ...] = ()  # and again with these numbers of clients
    row_seconds: float = 120.0  # every API row stops after this, done or not
    store_threads: int = 4  # PostgreSQL bulk load (SQLite takes one writer at a time)
    broker_sizes: tuple[int, ...] = (100, 1_000, 5_000)
    classic_size: int = 5_000  # the same topology with classic queues (0: not measured)
    changes: int = 50  # URL changes of existing endpoints
    creates: int = 10  # new endpoints (each waits for the worker's whole pass)
    change_timeout: float = 45.0  # beyond the workers' 30 s periodic reconciliation
    worker_timeout: float = 900.0
    settle_seconds: float = 10.0  # idle time before the worker's second RSS reading


PLANS = {
    "full": Plan(),
    "quick": Plan(
        endpoints=1_000,
        accounts=500,
        requests=2_000,
        row_seconds=60.0,
        broker_sizes=(100, 1_000),
        classic_size=1_000,
        changes=20,
        worker_timeout=300.0,
    ),
    "tiny": Plan(
        endpoints=40,
        accounts=20,
        big_account=10,
        requests=150,
        clients=4,
        api_workers=1,
        row_seconds=15.0,
        broker_sizes=(20,),
        classic_size=0,
        changes=3,
        creates=2,
        change_timeout=20.0,
        worker_timeout=60.0,
        settle_seconds=1.0,
    ),
}


_STARTED = time.monotonic()


def say(text: str) -> None:
    """Progress, on stderr, with the seconds since the run started (the tables go to stdout)."""
    print(f"[{time.monotonic() - _STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll ``check()`` until it is true; the seconds it took, or BenchError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


# Debian's rabbitmq-server.service (LimitNOFILE): what a packaged node gets.
NODE_OPEN_FILES = 65_536


def open_files_limit() -> int:
    """This process's open-files limit (its children, the RabbitMQ nodes too, inherit it)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def load_average() -> str:
    """``os.getloadavg()`` as "1 min / 5 min / 15 min"."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def load_1min() -> float:
    return os.getloadavg()[0]


def with_children(pid: int) -> list[int]:
    """``pid`` and its direct children (a PostgreSQL postmaster and its backends)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[1] == str(pid):
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Load:
    """CPU seconds of the whole machine and of our processes at one moment."""

    at: float
    busy: float
    ours: float

    @classmethod
    def read(cls, pids: Iterable[int] = ()) -> Load:
        ours = {os.getpid(), *pids}
        return cls(
            time.monotonic(),
            procstat.MachineCpu.read().busy,
            sum(procstat.cpu_seconds(p) for p in ours),
        )

    def others_pct(self, later: Load) -> float:
        """Share of the machine that processes not part of the run used since this moment."""
        capacity = (later.at - self.at) * procstat.cpu_count()
        others = max(0.0, (later.busy - self.busy) - (later.ours - self.ours))
        return 100 * others / capacity if capacity > 0 else math.nan


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
