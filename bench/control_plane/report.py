"""The run's results and how they are printed: one table per part, then the targets."""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass, field

from bench import procstat
from bench.control_plane.api_load import ApiRow
from bench.control_plane.broker_cost import BrokerRow
from bench.control_plane.changes import ChangeRow
from bench.control_plane.plan import NODE_OPEN_FILES, Plan
from bench.control_plane.store_load import LoadedStore
from bench.control_plane.worker_start import PhaseRow, WorkerRow
from bench.tables import fmt, table


@dataclass
class Results:
    size: str
    plan: Plan
    load_at_start: str
    open_files: int = 0  # the limit the nodes (and every process of the run) got
    stores: list[LoadedStore] = field(default_factory=list)
    api: list[ApiRow] = field(default_factory=list)
    broker: list[BrokerRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    phases: list[PhaseRow] = field(default_factory=list)
    changes: list[ChangeRow] = field(default_factory=list)
    changes_skipped: str = ""
    notes: list[str] = field(default_factory=list)
    load_at_end: str = ""
    seconds: float = math.nan


def _memory_gb() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 1024 / 1024


def _verdict(value: float, limit: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if value < limit else "NOT met"


def _targets(r: Results) -> list[list[str]]:
    rows = []
    groups = dict.fromkeys((a.backend, a.processes, a.clients) for a in r.api if a.clients > 1)
    for backend, processes, clients in groups:
        loaded = [
            a for a in r.api if (a.backend, a.processes, a.clients) == (backend, processes, clients)
        ]
        worst = max((a.p99_ms for a in loaded), default=math.nan)
        shown = ", ".join(f"{a.short.split(',')[0]} {fmt(a.p99_ms, 1)}" for a in loaded)
        where = f"{backend}, {clients} clients" + (
            f", {processes} processes" if processes > 1 else ""
        )
        rows.append([f"API p99 < 50 ms ({where})", shown + " ms", _verdict(worst, 50)])
    seen = [c for c in r.changes if c.seen]
    # Every row counts, a change made right after a create too: a change is
    # visible within 2 s whatever was changed just before it.
    change = max((c.p99_ms for c in seen), default=math.nan)
    shown = ", ".join(f"{c.short} {fmt(c.p99_ms)}" for c in seen)
    measured = r.changes_skipped or (shown + " ms" if seen else "-")
    rows.append(["change visible to workers p99 < 2 s", measured or "-", _verdict(change, 2000)])
    restart = next((w for w in r.workers if w.start == "restart"), None)
    start = restart.start_s if restart else math.nan
    rss = restart.peak_rss_mb if restart else math.nan
    endpoints = f"{restart.endpoints:,}" if restart else "-"
    first = " / ".join(f"{w.start} {fmt(w.start_s, 1)} s" for w in r.workers) or "-"
    rows.append([f"worker start < 15 s ({endpoints} endpoints)", first, _verdict(start, 15)])
    rows.append(
        [f"worker RSS < 150 MB ({endpoints} endpoints)", f"{fmt(rss)} MB peak", _verdict(rss, 150)]
    )
    return rows


def render(r: Results) -> str:
    out = io.StringIO()

    def emit(text: str = "") -> None:
        print(text, file=out)

    p = r.plan
    emit(
        f"webhook-relay control-plane benchmark ({r.size}): {p.endpoints:,} endpoints over "
        f"{p.accounts:,} accounts; {procstat.cpu_count()} cores ({procstat.cpu_model()}), "
        f"{_memory_gb():.0f} GB, Python {sys.version.split()[0]}"
    )
    emit(f"load average (1/5/15 min) at start: {r.load_at_start}")
    raised = (
        f"; the nodes' own file-handle limit raised to {NODE_OPEN_FILES - 100:,} as with "
        "Debian's LimitNOFILE=65536 (file_handle_cache:set_limit)"
        if r.open_files < NODE_OPEN_FILES
        else ""
    )
    emit(f"open files limit (ulimit -n): {r.open_files:,}{raised}")
    if r.stores:
        emit("\nendpoint store (EndpointStore.create_endpoint, one transaction each)")
        emit(
            table(
                ["store", "endpoints", "accounts", "create s", "creates/s", "load_all s",
                 "other load %"],
                [
                    [s.backend, f"{len(s.endpoints):,}", f"{s.accounts:,}", fmt(s.load_seconds, 1),
                     fmt(s.per_second), fmt(s.load_all_seconds, 2), fmt(s.other_load_pct)]
                    for s in r.stores
                ],
            )
        )  # fmt: skip
    if r.api:
        emit(
            "\nwebhook-api (a real process; closed-loop aiohttp clients, GET, latency per request)"
        )
        emit(
            table(
                ["store", "request", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms",
                 "p99 ms", "max ms", "API CPU ms/req", "API RSS MB", "other load %", "load 1m",
                 "API processes"],
                [
                    [a.backend, a.request, str(a.clients), f"{a.requests:,}", str(a.errors),
                     fmt(a.per_second), fmt(a.p50_ms, 1), fmt(a.p95_ms, 1), fmt(a.p99_ms, 1),
                     fmt(a.max_ms, 1), fmt(a.api_cpu_ms, 2), fmt(a.api_rss_mb, 1),
                     fmt(a.other_load_pct), fmt(a.load_1min, 2), str(a.processes)]
                    for a in r.api
                ],
            )
        )  # fmt: skip
    if r.broker:
        emit(
            "\nbroker cost (build_topology declared pipelined, quorum queues unless said; a "
            "fresh node per size; RSS from /proc, Erlang's own figures from rabbitmqctl eval)"
        )
        emit(
            table(
                ["declared", "queues", "bindings", "declare s", "ms/endpoint",
                 "busy after s", "re-declare s", "idle CPU %", "RSS before MB", "RSS after MB",
                 "RSS MB/endpoint", "Erlang MB/endpoint", "processes/endpoint",
                 "file handles/endpoint", "file handles used/limit", "fds open", "other load %",
                 "load 1m"],
                [
                    [b.label, f"{b.queues:,}", f"{b.bindings:,}", fmt(b.declare_s, 1),
                     fmt(b.ms_per_endpoint, 1), fmt(b.busy_after_s), fmt(b.redeclare_s, 2),
                     fmt(b.idle_cpu_pct), fmt(b.before.rss),
                     fmt(b.after.rss), fmt(b.rss_mb_per_endpoint, 3),
                     fmt(b.erlang_mb_per_endpoint, 3), fmt(b.processes_per_endpoint, 1),
                     fmt(b.handles_per_endpoint, 1),
                     f"{fmt(b.after.handles)} / {fmt(b.after.handle_limit)}", fmt(b.after.fds),
                     fmt(b.other_load_pct), fmt(b.load_1min, 2)]
                    for b in r.broker
                ],
            )
        )  # fmt: skip
    if r.workers:
        emit(f"\nworker start (python -m worker run, endpoints from the {r.workers[0].source})")
        emit(
            table(
                ["start", "endpoints", "to /readyz s", "CPU s", "RSS ready MB",
                 f"RSS +{p.settle_seconds:g}s MB", "peak RSS MB", "/metrics samples",
                 "/metrics KB", "scrape ms", "broker RSS MB", "other load %", "load 1m"],
                [[w.start, f"{w.endpoints:,}", fmt(w.start_s, 1), fmt(w.cpu_s, 1),
                  fmt(w.rss_ready_mb, 1), fmt(w.rss_settled_mb, 1), fmt(w.peak_rss_mb, 1),
                  f"{w.metrics_series:,}", fmt(w.metrics_kb), fmt(w.metrics_ms),
                  fmt(w.broker_rss_mb), fmt(w.other_load_pct), fmt(w.load_1min, 2)]
                 for w in r.workers],
            )
        )  # fmt: skip
        for phase in r.phases:
            emit(f"  timed alone afterwards: {phase.step}: {phase.seconds:.2f} s")
    emit(
        "\nchange visible to workers (API answer to first delivery there; applied: the "
        "worker's pass done, from its log)"
    )
    if r.changes_skipped or not r.changes:
        emit(f"  {r.changes_skipped or 'not run'}")
    else:
        emit(
            table(
                ["change", "made", "delivered", "p50 ms", "p99 ms", "max ms",
                 "applied p50 ms", "applied p99 ms"],
                [[c.change, str(c.made), str(c.seen), fmt(c.p50_ms), fmt(c.p99_ms),
                  fmt(c.max_ms), fmt(c.applied_p50_ms), fmt(c.applied_p99_ms)]
                 for c in r.changes],
            )
        )  # fmt: skip
    emit("\ntargets (printed, not asserted)")
    emit(table(["target", "measured", "verdict"], _targets(r)))
    notes = [*r.notes, *(f"{s.backend}: {s.note}" for s in r.stores if s.note)]
    notes += [f"{b.label}: {b.note}" for b in r.broker if b.note]
    notes += [f"worker, {w.start}: {w.note}" for w in r.workers if w.note]
    notes += [f"{c.change}: {c.note}" for c in r.changes if c.note]
    if notes:
        emit("\nnotes:")
        emit("\n".join(f"  {n}" for n in notes))
    emit(f"\nload average at end: {r.load_at_end}; the run took {r.seconds:.0f} s")
    return out.getvalue()
