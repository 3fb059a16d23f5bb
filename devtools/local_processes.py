"""Local child processes for developer tooling: free loopback ports, process groups,
stopping a process, the tail of its log.  Linux-specific where it reads /proc.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from pathlib import Path

LOOPBACK = "127.0.0.1"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free now.

    Taken below the kernel's ephemeral range: a node stopped and started again on
    its port (the restart tests) must not find it taken by some client
    connection's local port, which is drawn from that range.
    """
    low, high = 10_000, _ephemeral_low()
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((LOOPBACK, random.randrange(low, high)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def group_pids(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``, from /proc.

    Zombies are left out: a killed beam.smp orphaned to PID 1 stays a zombie until
    init reaps it, which in some containers takes seconds.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def group_alive(pgid: int) -> bool:
    """True while a non-zombie process of group ``pgid`` exists."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return bool(group_pids(pgid))


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the file at ``path`` (of its last 64 KiB); "" if unreadable."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``, kill it if it lingers, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
