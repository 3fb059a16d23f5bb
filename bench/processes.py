"""The processes a benchmark starts: the receiver and ``python -m worker run``.

Also the few things every part of ``bench`` shares: the error it stops with,
progress lines on stderr, and polling a local HTTP endpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.local_processes import free_ports

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "BENCH_SECRET"  # noqa: S105 - the name of a variable, not a secret


class BenchError(RuntimeError):
    """The benchmark could not run a step (the message says which)."""


@contextlib.contextmanager
def work_directory(keep: str | None, prefix: str) -> Iterator[Path]:
    """``keep`` (made if missing, kept afterwards), else a temporary directory removed after."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)


def say(text: str) -> None:
    """One progress line on stderr (the tables go to stdout)."""
    print(text, file=sys.stderr, flush=True)


def http_json(url: str, method: str = "GET", timeout: float = 10.0) -> Any:
    # Only ever http://127.0.0.1:<port>/... URLs built here.
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``check()`` until true; return the seconds it took, or raise after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ReceiverProcess:
    def __init__(self, workdir: Path, secret: str, kind: str) -> None:
        self.port = free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/webhook"
        log = (workdir / "receiver.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--port", str(self.port), "--kind", kind],
            cwd=ROOT,
            env={**os.environ, SECRET_ENV: secret},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_until(lambda: http_json(f"{self.base}/stats") is not None, 30, "the receiver")

    @property
    def pid(self) -> int:
        return self.process.pid

    def reset(self, fail_rate: float) -> None:
        http_json(f"{self.base}/reset?fail_rate={fail_rate}", "POST")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base}/stats")
        return result

    def results(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base}/results", timeout=60)
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class WorkerProcess:
    """``python -m worker run`` with its own subscriber file and metrics port."""

    def __init__(
        self, broker_url: str, config: Path, secret: str, log_path: Path, log_level: str
    ) -> None:
        self.metrics_port = free_ports(1)[0]
        self.log_path = log_path
        self.env = {
            **os.environ,
            "RABBITMQ_URL": broker_url,
            "WEBHOOK_CONFIG": str(config),
            SECRET_ENV: secret,
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": log_level,
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = math.nan
        # What runs: the deployed command (bench.control_plane swaps it in one case).
        self.command = [sys.executable, "-m", "worker", "run"]

    def start(self, timeout: float) -> WorkerProcess:
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"worker exited with {self.process.returncode}:\n{tail}")
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except urllib.error.HTTPError:
                return False

        wait_until(ready, timeout, "the worker's /readyz")
        self.start_seconds = time.monotonic() - started
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# The circuit breaker is set never to trip: with 10% of attempts failing at
