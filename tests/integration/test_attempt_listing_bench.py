"""``python -m bench.attempt_listing`` in its small mode runs end to end and prints its figures.

No timing is asserted (figures on a shared test machine mean nothing): this
proves the benchmark fills the log with the spread it describes, lists through
the real listing code and prints a row per kind of listing and the indexes.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

from devtools.postgres_node import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def test_small_attempt_listing_benchmark_prints_its_figures(postgres_url: str) -> None:
    name = f"test_listing_{secrets.token_hex(4)}"
    url = create_database(postgres_url, name)
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "bench.attempt_listing",
                "--rows", "20000", "--requests", "3", "--database-url", url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    finally:
        drop_database(postgres_url, name)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"^rows 20,000; table ", out, re.M), out
    assert "ix_delivery_attempts_endpoint_time" in out, out
    assert "ix_delivery_attempts_endpoint_outcome_time" in out, out
    rows = re.findall(
        rf"^(.+?)\s+3  {NUMBER} / {NUMBER} / {NUMBER}\s+{NUMBER} / {NUMBER}", out, re.M
    )
    assert len(rows) >= 20, out
    assert any(r.startswith("endpoint, hot, first page") for r in rows), out
    assert re.search(r"^endpoint, hot, pages 1-N following next_cursor", out, re.M), out
