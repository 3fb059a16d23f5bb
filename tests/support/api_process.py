"""``python -m cli.api`` as a real separate process, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools.local_processes import free_ports
from tests.support.api import TOKEN

ROOT = Path(__file__).resolve().parents[2]
# Variables of the outer environment that would change what the server does.
_CLEARED = (
    "DATABASE_URL",
    "SECRETS_KEY",
    "SECRETS_KEY_FILE",
    "API_TOKENS",
    "API_TOKENS_FILE",
    "WEBHOOK_DATA_DIR",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
    "RABBITMQ_USERNAME",
    "RABBITMQ_PASSWORD",
)


class ApiProcess:
    """One webhook-api process on a free port; its output goes to ``log_path``."""

    def __init__(self, log_path: Path, **environment: str) -> None:
        self.port = free_ports(1)[0]
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        self.env = {
            **base,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "API_TOKENS": TOKEN,
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_SECONDS": "5",
            **environment,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.api"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                raise AssertionError(f"webhook-api exited early:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook-api not up:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
