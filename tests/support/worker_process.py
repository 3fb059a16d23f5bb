"""Run ``python -m worker run`` as a real separate process (for SIGTERM/SIGKILL tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from devtools.local_processes import free_ports

SUBSCRIBER_FILE = """\
subscribers:
{entries}
retry:
  delays_seconds: [{delays}]
security:
  allow_private_networks: true
"""

ENTRY = """\
  - id: {id}
    url: {url}
    secret: ${{TEST_SECRET}}
    account: acme
    events: ["order.*"]
    timeout_seconds: 5
    max_in_flight: {in_flight}
"""


def write_subscriber_file(
    path: Path,
    subscribers: Sequence[tuple[str, str]],
    *,
    delays: Sequence[float] = (0.5, 0.5),
    in_flight: int = 16,
) -> Path:
    entries = "".join(ENTRY.format(id=i, url=u, in_flight=in_flight) for i, u in subscribers)
    path.write_text(
        SUBSCRIBER_FILE.format(entries=entries.rstrip("\n"), delays=", ".join(map(str, delays))),
        encoding="utf-8",
    )
    return path


class WorkerProcess:
    """One worker process with its own metrics port; output kept in a log file."""

    def __init__(
        self, broker_url: str, config: Path, secret: str, log_path: Path, grace_seconds: float = 10
    ) -> None:
        self.metrics_port = free_ports(1)[0]
        self.log_path = log_path
        self.env = {
            **os.environ,
            "RABBITMQ_URL": broker_url,
            "WEBHOOK_CONFIG": str(config),
            "TEST_SECRET": secret,
            "METRICS_PORT": str(self.metrics_port),
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_SECONDS": str(grace_seconds),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready_timeout: float = 30) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "run", env=self.env, stdout=log, stderr=log
        )
        log.close()
        await self.wait_ready(ready_timeout)
        return self

    def _ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._ready):
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
