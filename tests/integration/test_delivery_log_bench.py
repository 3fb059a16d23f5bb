"""``python -m bench.delivery_log --tiny`` runs end to end and prints its figures.

No timing is asserted (figures on a shared test machine mean nothing): this only
proves the benchmark works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def test_tiny_delivery_log_benchmark_prints_its_figures(vhost_url: str) -> None:
    if urlsplit(vhost_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the benchmark only runs against a broker on loopback")
    result = subprocess.run(
        [sys.executable, "-m", "bench.delivery_log", "--tiny", "--sqlite-only"],
        cwd=ROOT,
        env={**os.environ, "RABBITMQ_URL": vhost_url},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(rf"backlog 500 records written in {NUMBER} s: {NUMBER} records/s", out), out
    assert re.search(rf"peak RSS {NUMBER} MiB", out), out
    assert re.search(r"steady 3,000 records/s for 1 s: all written", out), out
    for state in ("off", "on "):
        assert re.search(rf"log {state}: 200 events drained at {NUMBER}/s", out), out
    assert re.search(rf"on/off per pair: {NUMBER}", out), out
