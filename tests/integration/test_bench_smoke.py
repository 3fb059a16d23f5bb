"""The benchmark in its tiniest mode runs end to end and prints its tables with numbers.

No timing is asserted: figures on a shared test machine mean nothing; this only
proves that ``python -m bench`` works (see docs/performance.md).
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


def _row(output: str, label: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(label + "  "):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no {label!r} row in:\n{output}")


def test_tiny_benchmark_prints_the_tables(vhost_url: str, tmp_path: Path) -> None:
    if urlsplit(vhost_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the benchmark only runs against a broker on loopback")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--json", str(tmp_path / "bench.json")],
        cwd=ROOT,
        env={**os.environ, "RABBITMQ_URL": vhost_url},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    for header in ("deliv/s", "p99 ms", "worker CPU s/1k", "worker peak RSS MB", "confirmed/s"):
        assert header in out, out
    assert re.search(rf"receiver alone: {NUMBER} req/s", out), out

    for label in ("backlog drain", "flat out", "retries 10%, flat out"):
        row = _row(out, label)
        events, delivered = int(row[2]), int(row[3])
        assert events == delivered > 0, row  # every event arrived, signature verified
        assert re.fullmatch(NUMBER, row[4]), row  # deliveries/s
        assert re.fullmatch(NUMBER, row[9]), row  # worker CPU s per 1,000
        assert re.fullmatch(NUMBER, row[10]), row  # worker peak RSS

    steady = next(line for line in out.splitlines() if line.startswith("steady "))
    assert re.search(rf"{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}", steady), steady

    producer = _row(out, "publish_many(lists of 100)")
    assert re.fullmatch(NUMBER, producer[2]), producer
    single = _row(out, "publish(), one at a time")
    assert re.fullmatch(NUMBER, single[4]), single  # call p99 ms

    sweep = _row(out, "1")
    assert int(sweep[6]) == int(sweep[7]) > 0, sweep  # deliveries == delivered
    assert (tmp_path / "bench.json").is_file()
