"""What each endpoint costs RabbitMQ: declaring its queues and bindings, and the node's memory.

Every size gets a fresh throwaway node (``LocalRabbitMQ``), so its memory is
measured from a clean baseline: the broker's resident memory (/proc), what the
Erlang VM has allocated and its process count (``rabbitmqctl eval``), right
before and a settled moment after declaring ``build_topology`` for N
endpoints (2 quorum queues and 3 bindings each) through
``broker.declarer.declare_topology``, the workers' own call.  Also: how long
the node stays busy after the last declare-ok (its new queues starting), the
time to declare again (what every worker start does) and the node's CPU when
idle with all those queues.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from dataclasses import dataclass, replace

from pika.adapters.utils.connection_workflow import AMQPConnectorException

from bench import procstat
from bench.control_plane.plan import NODE_OPEN_FILES, Load, load_1min, open_files_limit, say
from broker.connection import blocking_connection
from broker.declarer import apply_topology
from broker.url import BrokerUrl
from config.errors import BrokerError
from config.subscribers import RetryPolicy, Subscriber
from config.topology import Queue, Topology, build_topology
from devtools.rabbitmq_node import LocalRabbitMQ, RabbitMQNodeError

MB = 1024 * 1024


# One call for the figures: memory, processes, and RabbitMQ 3.10's file-handle
# accounting (file_handle_cache), where every quorum queue reserves handles and
# a node whose reservations pass its limit stops accepting connections.
_FIGURES = (
    "FH = file_handle_cache:info(), "
    'io:format("~b ~b ~b ~b~n", [erlang:memory(total), erlang:system_info(process_count), '
    "proplists:get_value(total_used, FH), proplists:get_value(total_limit, FH)])."
)


def like_a_package(node: LocalRabbitMQ, open_files: int = NODE_OPEN_FILES) -> None:
    """Give the node the file-handle limit a packaged node has (LimitNOFILE=65536).

    RabbitMQ 3.10 counts file handles itself (file_handle_cache): every quorum
    queue reserves 3, and a node whose count passes its limit (the open-files
    ulimit less 100) accepts no new connection.  Where this machine's ulimit is
    lower (20,000 here, and raising it needs a capability the run may not have),
    the node's own limit is raised instead: real descriptors stay far below it
    (the "fds" figure of each row).
    """
    if open_files_limit() < open_files:
        node.ctl("eval", f"file_handle_cache:set_limit({open_files - 100}).")


@dataclass(frozen=True)
class Memory:
    """A node's memory at one moment (NaN where it could not be read)."""

    rss: float = math.nan  # MiB, the broker's resident set (/proc)
    erlang: float = math.nan  # MiB, what the Erlang VM has allocated (erlang:memory(total))
    processes: float = math.nan  # Erlang processes in the node
    handles: float = math.nan  # file handles in use or reserved (file_handle_cache)
    handle_limit: float = math.nan
    fds: float = math.nan  # descriptors the broker really has open (/proc)

    @classmethod
    def of(cls, node: LocalRabbitMQ | None, pid: int | None) -> Memory:
        """RSS from /proc; on our own node also the VM's own figures (cheap calls only:
        ``rabbitmqctl status`` walks every process and timed out at 10,000 quorum queues)."""
        rss = procstat.rss_mb(pid) if pid else math.nan
        fds = len(os.listdir(f"/proc/{pid}/fd")) if pid else math.nan
        if node is None:
            return cls(rss=rss, fds=fds)
        try:
            output = node.ctl("eval", _FIGURES, timeout=60)
            erlang, count, handles, limit = (int(x) for x in output.split()[:4])
        except (RabbitMQNodeError, subprocess.TimeoutExpired, ValueError):
            return cls(rss=rss, fds=fds)
        return cls(rss, erlang / MB, count, handles, limit, fds)


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

    @property
    def processes_per_endpoint(self) -> float:
        return (self.after.processes - self.before.processes) / self.endpoints

    @property
    def handles_per_endpoint(self) -> float:
        return (self.after.handles - self.before.handles) / self.endpoints


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


def settle(pid: int | None, limit: float = 30.0) -> float:
    """Wait (bounded) until the broker's CPU has come down to its plateau; the seconds waited.

    The plateau is not zero: idle quorum queues cost CPU too (the "idle CPU"
    column), so this waits until a 2-second window uses under a quarter of a
    core, or no less than the window before it (give or take 10% of a core).
    """
    started = time.monotonic()
    if not pid:
        time.sleep(2.0)
        return math.nan
    previous = math.inf
    while time.monotonic() - started < limit:
        before = procstat.cpu_seconds(pid)
        time.sleep(2.0)
        used = (procstat.cpu_seconds(pid) - before) / 2.0  # cores
        if used < 0.25 or used > previous - 0.1:
            break
        previous = used
    return time.monotonic() - started


def idle_cpu_pct(pid: int | None, seconds: float = 5.0) -> float:
    """The broker's CPU over ``seconds`` with nothing to do, in % of one core."""
    if not pid:
        return math.nan
    before = procstat.cpu_seconds(pid)
    time.sleep(seconds)
    return 100 * (procstat.cpu_seconds(pid) - before) / seconds


def classic(topology: Topology) -> Topology:
    """The same topology with classic queues: what "classic queues for cold endpoints" costs.

    Only the arguments classic queues do not take are dropped (the delivery limit
    and at-least-once dead-lettering: the guarantees that quorum queues give).
    """
    quorum_only = ("x-queue-type", "x-delivery-limit", "x-dead-letter-strategy")
    queues = tuple(
        Queue(q.name, {k: v for k, v in q.arguments.items() if k not in quorum_only})
        for q in topology.queues
    )
    return replace(topology, queues=queues)


def _declare(broker: BrokerUrl, topology: Topology) -> float:
    """Seconds to declare; a connection that fails at once is tried again once."""
    for attempt in (1, 2):
        started = time.monotonic()
        try:
            with blocking_connection(broker, name="bench-topology", operation="declaring") as c:
                apply_topology(c.channel(), topology)
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
    topology: Topology,
    endpoints: int,
    node: LocalRabbitMQ | None,
    broker_pid: int | None,
) -> BrokerRow:
    """Declare ``topology`` (of ``endpoints`` endpoints) twice; the node's memory around it.

    Failures are noted in the row, not raised: the other sizes still run.
    """
    row = BrokerRow(label, endpoints, len(topology.queues), len(topology.bindings))
    say(f"- declaring {label}: {row.queues:,} queues, {row.bindings:,} bindings ...")
    settle(broker_pid)
    row.before = Memory.of(node, broker_pid)
    pids = [broker_pid] if broker_pid else []
    load = Load.read(pids)
    try:
        row.declare_s = _declare(broker, topology)
        row.other_load_pct = load.others_pct(Load.read(pids))
        row.load_1min = load_1min()
        # The last declare-ok does not mean the node is done: the queues keep it busy.
        row.busy_after_s = settle(broker_pid, limit=300.0)
        row.redeclare_s = _declare(broker, topology)
    except (BrokerError, AMQPConnectorException) as exc:
        row.note = f"declaring failed: {exc!r}"
    settle(broker_pid, limit=120.0)
    row.idle_cpu_pct = idle_cpu_pct(broker_pid)
    row.after = Memory.of(node, broker_pid)
    if node is None:
        row.note += "; a broker we did not start: RSS only" if broker_pid else "; no memory figure"
    row.note = row.note.strip("; ")
    say(
        f"  declare {row.declare_s:.1f} s, busy after {row.busy_after_s:.0f} s, re-declare "
        f"{row.redeclare_s:.2f} s, RSS {row.before.rss:.0f} -> {row.after.rss:.0f} MB, "
        f"idle CPU {row.idle_cpu_pct:.0f}%, file handles {row.after.handles:.0f} of "
        f"{row.after.handle_limit:.0f} ({row.after.fds:.0f} fds open) {row.note}"
    )
    return row


def measure_sizes(sizes: tuple[int, ...], classic_size: int) -> list[BrokerRow]:
    """One fresh throwaway node per size, and one for the classic-queue variant."""
    runs = [
        (f"{n:,} endpoints", n, build_topology(synthetic_subscribers(n), RetryPolicy()))
        for n in sizes
    ]
    if classic_size:
        quorum = build_topology(synthetic_subscribers(classic_size), RetryPolicy())
        runs.append((f"{classic_size:,} endpoints, classic queues", classic_size, classic(quorum)))
    rows = []
    for label, count, topology in runs:
        try:
            with LocalRabbitMQ() as node:
                like_a_package(node)
                pid = procstat.pid_listening_on(node.port)
                broker = BrokerUrl.parse(node.url)
                rows.append(measure_declare(label, broker, topology, count, node, pid))
        except (RabbitMQNodeError, subprocess.TimeoutExpired) as exc:
            say(f"  {label}: {exc!r}")
            rows.append(BrokerRow(label, count, note=f"failed: {exc!r}"))
    return rows
