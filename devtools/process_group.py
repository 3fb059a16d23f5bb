"""The child processes of ``run-local``: started with their output shown, stopped together."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence


class ProcessGroup:
    """Processes whose output lines are printed as ``[name] line``; stopped last first."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[str]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        lines: list[str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv``; every line it prints is shown, and appended to ``lines`` if given."""
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._processes.append(process)
        threading.Thread(target=_follow, args=(process, name, lines), daemon=True).start()
        return process

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM each one still running (the last started first), then wait; kill if stuck."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()


def _follow(process: subprocess.Popen[str], name: str, lines: list[str] | None) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if lines is not None:
            lines.append(line)
        print(f"[{name}] {line}", end="", flush=True)
