"""What each endpoint costs RabbitMQ: declaring its queues and bindings, and the node's memory.

Every size gets a fresh throwaway node (``LocalRabbitMQ``), so its memory is
measured from a clean baseline: the node's own figures (``rabbitmqctl status``:
resident memory, what Erlang has allocated, quorum-queue processes and tables)
right before and a settled moment after declaring ``build_topology`` for N
endpoints (2 quorum queues and 3 bindings each) through
``broker.declarer.declare_topology``, the workers' own call.  Declaring again
(what every worker start does) is timed too.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from bench import procstat
from bench.control_plane.plan import Load, load_1min, say
from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.subscribers import RetryPolicy, Subscriber
from config.topology import build_topology
from devtools.rabbitmq_node import LocalRabbitMQ

MB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """A node's memory at one moment, in MiB (NaN where it could not be read)."""

    rss: float = math.nan
    erlang: float = math.nan
    quorum: float = math.nan  # quorum_queue_procs + quorum_ets

    @classmethod
    def of(cls, node: LocalRabbitMQ | None, pid: int | None) -> Memory:
        """From ``rabbitmqctl status`` on our own node, else the RSS of the broker's pid."""
        if node is None:
            return cls(rss=procstat.rss_mb(pid) if pid else math.nan)
        memory = json.loads(node.ctl("status", "--formatter", "json", timeout=120))["memory"]
        return cls(
            rss=memory["total"]["rss"] / MB,
            erlang=memory["total"]["erlang"] / MB,
            quorum=(memory.get("quorum_queue_procs", 0) + memory.get("quorum_ets", 0)) / MB,
        )


@dataclass
class BrokerRow:
    label: str
    endpoints: int
    queues: int = 0
    bindings: int = 0
    declare_s: float = math.nan
    redeclare_s: float = math.nan
    before: Memory = Memory()
    after: Memory = Memory()
    other_load_pct: float = math.nan
    load_1min: float = math.nan
    note: str = ""

    @property
    def ms_per_endpoint(self) -> float:
        return self.declare_s * 1000 / self.endpoints if self.endpoints else math.nan

    @property
    def rss_mb_per_endpoint(self) -> float:
        return (self.after.rss - self.before.rss) / self.endpoints if self.endpoints else math.nan

    @property
    def erlang_mb_per_endpoint(self) -> float:
        return (self.after.erlang - self.before.erlang) / self.endpoints


def synthetic_subscribers(count: int, prefix: str = "bc") -> list[Subscriber]:
    """``count`` endpoints two to an account, like the store's (ids, accounts, ``order.*``)."""
    return [
        Subscriber.model_validate(
            {
                "id": f"{prefix}-{index}",
                "account": f"acct-{index // 2:05d}",
                "url": f"http://127.0.0.1:9/ep/{index}",
                "secret": "bench-secret-not-used-for-signing",
                "events": ["order.*"],
            }
        )
        for index in range(count)
    ]


def settle(pid: int | None, limit: float = 30.0) -> None:
    """Wait (bounded) until the broker is nearly idle (under 10% of a core)."""
    if not pid:
        time.sleep(2.0)
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = procstat.cpu_seconds(pid)
        time.sleep(1.0)
        if procstat.cpu_seconds(pid) - before < 0.1:
            return


def measure_declare(
    label: str,
    broker: BrokerUrl,
    subscribers: list[Subscriber],
    node: LocalRabbitMQ | None,
    broker_pid: int | None,
) -> BrokerRow:
    """Declare the topology of ``subscribers`` (first time, then again); memory around it."""
    retry = RetryPolicy()
    topology = build_topology(subscribers, retry)
    row = BrokerRow(label, len(subscribers), len(topology.queues), len(topology.bindings))
    say(f"- declaring {label}: {row.queues:,} quorum queues, {row.bindings:,} bindings ...")
    settle(broker_pid)
    row.before = Memory.of(node, broker_pid)
    pids = [broker_pid] if broker_pid else []
    load = Load.read(pids)
    started = time.monotonic()
    declare_topology(broker, subscribers, retry)
    row.declare_s = time.monotonic() - started
    row.other_load_pct = load.others_pct(Load.read(pids))
    row.load_1min = load_1min()
    started = time.monotonic()
    declare_topology(broker, subscribers, retry)
    row.redeclare_s = time.monotonic() - started
    settle(broker_pid)
    row.after = Memory.of(node, broker_pid)
    if node is None:
        row.note = "a broker we did not start: RSS only" if broker_pid else "memory not visible"
    return row


def measure_sizes(sizes: tuple[int, ...]) -> list[BrokerRow]:
    """One fresh throwaway node per size."""
    rows = []
    for count in sizes:
        with LocalRabbitMQ() as node:
            pid = procstat.pid_listening_on(node.port)
            broker = BrokerUrl.parse(node.url)
            rows.append(
                measure_declare(
                    f"{count:,} endpoints", broker, synthetic_subscribers(count), node, pid
                )
            )
    return rows
