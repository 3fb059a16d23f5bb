"""Where a store-backed worker's memory goes: ``python -m bench.control_plane.worker_memory``.

Fills a SQLite endpoint store (``--endpoints``, default 10,000; ``--keep DIR``
reuses one), then, in a fresh process so that imports count, goes through a
worker's start without a broker: imports and the store opened, the store read
(``StoreSource.load``), the lanes built (``Reconciler.adopt``), one ``/metrics``
render.  Prints the RSS after each step and, from tracemalloc, the files whose
allocations the endpoints keep.  docs/scaling.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

_SITE = str(Path(os.__file__).parent)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _step(name: str, rows: list[tuple[str, float]]) -> None:
    gc.collect()
    rows.append((name, _rss_mb()))


def measure(store_dir: Path, *, trace: bool) -> None:
    """The steps, in this (fresh) process: their RSS, or (``trace``) what tracemalloc saw.

    Two processes, because tracing costs memory of its own.
    """
    rows: list[tuple[str, float]] = []
    _step("python", rows)
    os.environ["DATABASE_URL"] = f"sqlite:///{store_dir / 'store.db'}"
    os.environ["SECRETS_KEY"] = (store_dir / "key").read_text()
    os.environ.setdefault("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/")
    import cli.worker  # noqa: F401  (what `python -m worker run` imports first)
    from config.settings import load_settings
    from worker.service import Worker

    with contextlib.suppress(ImportError):  # a PostgreSQL-backed worker imports its driver too
        import psycopg  # noqa: F401
    worker = Worker(load_settings())
    _step("imports, the store opened (psycopg imported)", rows)
    if trace:
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()

    async def start() -> tuple[int, int, float]:
        snapshot = await worker.reconciler.source.load()
        _step(f"the store read: {len(snapshot.specs):,} endpoints", rows)
        worker.reconciler.adopt(snapshot)
        del snapshot
        _step("lanes built", rows)
        from prometheus_client import REGISTRY, generate_latest

        started = time.perf_counter()
        page = generate_latest(REGISTRY)
        seconds = time.perf_counter() - started
        samples = sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))
        return samples, len(page), seconds

    samples, size, seconds = asyncio.run(start())
    if trace:
        kept = tracemalloc.take_snapshot().compare_to(before, "filename")
        tracemalloc.stop()
        print("kept by reading the store and building the lanes (tracemalloc, by file):")
        for stat in kept[:10]:
            where = stat.traceback[0].filename.replace(_SITE + "/site-packages/", "")
            print(f"  {stat.size_diff / 2**20:6.2f} MiB {stat.count_diff:8,} blocks  {where}")
        return
    previous = 0.0
    print("step                                               RSS MB   +MB")
    for name, rss in rows:
        print(f"{name:50s} {rss:7.1f} {rss - previous if previous else 0:6.1f}")
        previous = rss
    render_ms = seconds * 1000
    print(f"/metrics: {samples:,} samples, {size / 1024:.0f} KB, rendered in {render_ms:.0f} ms\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane.worker_memory")
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--keep", help="the store's directory (filled once, then reused)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the fresh process's part
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure(Path(args.measure), trace=args.trace)
        return 0
    # Imported here: the measuring process must start from a bare interpreter.
    from bench.control_plane.plan import PLANS, say
    from bench.control_plane.store_load import fill_store, new_secrets_key

    with tempfile.TemporaryDirectory(prefix="wh-worker-memory-") as tmp:
        store_dir = Path(args.keep or tmp)
        store_dir.mkdir(parents=True, exist_ok=True)
        if not (store_dir / "store.db").exists():
            key = new_secrets_key()
            (store_dir / "key").write_text(key)
            plan = PLANS["full"]
            plan = type(plan)(endpoints=args.endpoints, accounts=max(1, args.endpoints // 2))
            fill_store(
                "SQLite", f"sqlite:///{store_dir / 'store.db'}", key, plan, "http://127.0.0.1:9", []
            )
        say(f"- a worker's start steps with the {store_dir} store, in a fresh process ...")
        command = [sys.executable, "-m", "bench.control_plane.worker_memory", "--measure"]
        for extra in ([], ["--trace"]):
            done = subprocess.run([*command, str(store_dir), *extra], check=False)
            if done.returncode:
                return done.returncode
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
