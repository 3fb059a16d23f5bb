"""CPU time and memory of processes, read from /proc (Linux only, no psutil)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from devtools.local_processes import group_pids

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # "pid (comm) state ppid ..."; comm may contain spaces, so split after ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the largest resident set ``pid`` has had, in MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    """VmRSS: the resident set right now, in MiB."""
    return _status_kb(pid, "VmRSS") / 1024


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used by the live processes of a process group (e.g. the broker)."""
    return sum(cpu_seconds(pid) for pid in group_pids(pgid))


@dataclass(frozen=True)
class MachineCpu:
    """Busy and total CPU seconds of the whole machine, all cores, since boot."""

    busy: float
    total: float

    @classmethod
    def read(cls) -> MachineCpu:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
        idle = fields[3] + fields[4]
        return cls((total - idle) / _TICKS, total / _TICKS)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def pid_listening_on(port: int) -> int | None:
    """The pid of the local process with a TCP socket listening on ``port``, if visible."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue
    return None
