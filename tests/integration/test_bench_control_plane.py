"""The control-plane benchmark in its tiniest mode runs end to end and prints its tables.

No figure is asserted (on a shared test machine they mean nothing): this only
proves that ``python -m bench.control_plane`` works (see docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools.postgres_node import postgres_available
from devtools.rabbitmq_node import rabbitmq_available

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"-?[0-9][0-9,]*(?:\.[0-9]+)?"


def _rows(output: str, label: str) -> list[list[str]]:
    return [
        re.split(r"\s{2,}", line.strip())
        for line in output.splitlines()
        if line.startswith(label + "  ")
    ]


@pytest.mark.timeout(180)
def test_tiny_control_plane_benchmark_prints_its_tables(vhost_url: str, tmp_path: Path) -> None:
    if urlsplit(vhost_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the benchmark only runs against a broker on loopback")
    result = subprocess.run(
        [sys.executable, "-m", "bench.control_plane", "--tiny", "--json", str(tmp_path / "r.json")],
        cwd=ROOT,
        env={**os.environ, "RABBITMQ_URL": vhost_url},
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    for heading in (
        "endpoint store",
        "webhook-api",
        "broker cost",
        "worker start",
        "change visible to workers",
        "targets (printed, not asserted)",
    ):
        assert heading in out, out
    assert re.search(rf"load average \(1/5/15 min\) at start: {NUMBER} / {NUMBER}", out), out
    assert re.search(rf"load average at end: {NUMBER} / {NUMBER} / {NUMBER}", out), out

    stores = ["SQLite", "PostgreSQL"] if postgres_available() else ["SQLite"]
    for store in stores:
        (created,) = _rows(out, store)[:1]
        assert created[1] == "40", created  # every endpoint made it into the store
        api = [row for row in _rows(out, store) if len(row) > 8]
        assert len(api) == 4, api  # list, page, get with 8 clients, get with 1
        for row in api:
            assert row[4] == "0", row  # no request failed
            assert re.fullmatch(NUMBER, row[8]), row  # p99 ms

    (declared,) = _rows(out, "40 endpoints (the worker's node)")
    assert declared[1] == "82", declared  # 2 quorum queues per endpoint and 2 delay queues
    if rabbitmq_available():
        assert _rows(out, "20 endpoints"), out  # the broker-cost size on its own node

    for start in ("first start", "restart"):
        (worker,) = _rows(out, start)
        assert worker[1] == "40", worker
        assert re.fullmatch(NUMBER, worker[2]), worker  # to /readyz s
    changes = out.split("change visible to workers", 1)[1]
    skipped = "skipped: workers in this tree do not read the store" in changes
    assert skipped or _rows(changes, "create (a new account's first endpoint)"), changes

    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["size"] == "tiny"
    assert "postgresql://" not in json.dumps(saved)  # no database URL (or password) saved


@pytest.mark.timeout(120)
def test_the_worker_memory_breakdown_prints_every_step(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.control_plane.worker_memory",
            "--endpoints",
            "20",
            "--keep",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for step in ("python", "imports, the store opened", "the store read: 20 endpoints", "lanes"):
        assert re.search(rf"^{re.escape(step)}.*\s{NUMBER}\s+{NUMBER}$", out, re.M), step
    # Idle endpoints: only the worker's own series, none per endpoint.
    samples = re.search(rf"^/metrics: ({NUMBER}) samples", out, re.M)
    assert samples is not None and int(samples.group(1).replace(",", "")) < 100
    assert "kept by reading the store and building the lanes" in out
