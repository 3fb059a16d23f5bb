"""CPU time of the run's processes and of everything else on the machine, between two moments."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import procstat


@dataclass
class Snapshot:
    """CPU seconds of every process that matters, at one moment."""

    at: float
    workers: float
    receiver: float
    broker: float
    me: float
    machine: procstat.MachineCpu

    @classmethod
    def take(cls, workers: Sequence[int], receiver: int, broker: int | None) -> Snapshot:
        return cls(
            at=time.monotonic(),
            workers=sum(procstat.cpu_seconds(p) for p in workers),
            receiver=procstat.cpu_seconds(receiver),
            broker=procstat.cpu_seconds(broker) if broker else 0.0,
            me=procstat.cpu_seconds(os.getpid()),
            machine=procstat.MachineCpu.read(),
        )


@dataclass
class Usage:
    seconds: float
    workers: float
    receiver: float
    broker: float
    me: float
    others: float  # CPU seconds of every other process on the machine

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Usage:
        ours = (b.workers - a.workers) + (b.receiver - a.receiver) + (b.broker - a.broker)
        ours += b.me - a.me
        busy = b.machine.busy - a.machine.busy
        return cls(
            seconds=b.at - a.at,
            workers=b.workers - a.workers,
            receiver=b.receiver - a.receiver,
            broker=b.broker - a.broker,
            me=b.me - a.me,
            others=max(0.0, busy - ours),
        )

    def other_load_pct(self) -> float:
        capacity = self.seconds * procstat.cpu_count()
        return 100 * self.others / capacity if capacity > 0 else math.nan
