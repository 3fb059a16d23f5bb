"""What each endpoint costs RabbitMQ: declaring its queues and bindings, and the node's memory.

Every size gets a fresh throwaway node (``LocalRabbitMQ``), so its memory is
measured from a clean baseline: the node's own figures (``rabbitmqctl status``:
resident memory, what Erlang has allocated, quorum-queue processes and tables)
right before and a settled moment after declaring ``build_topology`` for N
endpoints (2 quorum queues and 3 bindings each) through
``broker.declarer.declare_topology``, the workers' own call.  Also: how long
the node stays busy after the last declare-ok (its new queues starting), the
time to declare again (what every worker start does) and the node's CPU when
idle with all those queues.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from pika.adapters.utils.connection_workflow import AMQPConnectorException

from bench import procstat
from bench.control_plane.plan import Load, load_1min, say
from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.errors import BrokerError
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
    busy_after_s: float = math.nan  # the node's CPU above 1/4 core after the last declare-ok
    idle_cpu_pct: float = math.nan  # the node's CPU afterwards with nothing to do
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


def settle(pid: int | None, limit: float = 30.0, busy: float = 0.25) -> float:
    """Wait (bounded) until the broker uses less than ``busy`` of a core; the seconds waited."""
    started = time.monotonic()
    if not pid:
        time.sleep(2.0)
        return math.nan
    while time.monotonic() - started < limit:
        before = procstat.cpu_seconds(pid)
        time.sleep(1.0)
        if procstat.cpu_seconds(pid) - before < busy:
            break
    return time.monotonic() - started


def idle_cpu_pct(pid: int | None, seconds: float = 5.0) -> float:
    """The broker's CPU over ``seconds`` with nothing to do, in % of one core."""
    if not pid:
        return math.nan
    before = procstat.cpu_seconds(pid)
    time.sleep(seconds)
    return 100 * (procstat.cpu_seconds(pid) - before) / seconds


def _declare(broker: BrokerUrl, subscribers: list[Subscriber]) -> float:
    """Seconds to declare; a connection that fails at once is tried again once."""
    for attempt in (1, 2):
        started = time.monotonic()
        try:
            declare_topology(broker, subscribers, RetryPolicy())
        except (BrokerError, AMQPConnectorException):
            # pika's handshake timeout is no AMQPError: a busy broker can time it out.
            if attempt == 2:
                raise
            time.sleep(5.0)
            continue
        return time.monotonic() - started
    raise AssertionError("unreachable")


def measure_declare(
    label: str,
    broker: BrokerUrl,
    subscribers: list[Subscriber],
    node: LocalRabbitMQ | None,
    broker_pid: int | None,
) -> BrokerRow:
    """Declare the topology of ``subscribers`` (first time, then again); memory around it.

    Failures are noted in the row, not raised: the other sizes still run.
    """
    topology = build_topology(subscribers, RetryPolicy())
    row = BrokerRow(label, len(subscribers), len(topology.queues), len(topology.bindings))
    say(f"- declaring {label}: {row.queues:,} quorum queues, {row.bindings:,} bindings ...")
    settle(broker_pid)
    row.before = Memory.of(node, broker_pid)
    pids = [broker_pid] if broker_pid else []
    load = Load.read(pids)
    try:
        row.declare_s = _declare(broker, subscribers)
        row.other_load_pct = load.others_pct(Load.read(pids))
        row.load_1min = load_1min()
        # The last declare-ok does not mean the node is done: the queues keep it busy.
        row.busy_after_s = settle(broker_pid, limit=300.0)
        row.redeclare_s = _declare(broker, subscribers)
    except (BrokerError, AMQPConnectorException) as exc:
        row.note = f"declaring failed: {exc!r}"
    settle(broker_pid, limit=120.0)
    row.idle_cpu_pct = idle_cpu_pct(broker_pid)
    row.after = Memory.of(node, broker_pid)
    if node is None:
        row.note += "; a broker we did not start: RSS only" if broker_pid else "; no memory figure"
    row.note = row.note.strip("; ")
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
