"""The tables ``python -m bench`` prints."""

from __future__ import annotations

import argparse
import io
import sys

from bench import procstat
from bench.plan import Plan
from bench.results import Results
from bench.tables import fmt as _fmt
from bench.tables import table as _table


def render(results: Results, plan: Plan, args: argparse.Namespace, broker: str) -> str:
    out = io.StringIO()
    print(
        f"webhook-relay benchmark ({args.size}): {procstat.cpu_count()} cores "
        f"({procstat.cpu_model()}), Python {sys.version.split()[0]}, broker {broker}, "
        f"receiver {args.receiver}, log level {args.log_level}, "
        f"max_in_flight {plan.in_flight}, retry delays {plan.retry_delay:g} s",
        file=out,
    )
    print(
        f"receiver alone: {_fmt(results.receiver_alone_per_s)} req/s "
        f"({_fmt(results.receiver_alone_cpu_per_1k, 3)} CPU s per 1,000)",
        file=out,
    )
    print(file=out)
    headers = [
        "scenario",
        "workers",
        "events",
        "delivered",
        "deliv/s",
        "publish/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "worker CPU s/1k",
        "worker peak RSS MB",
        "receiver CPU s/1k",
        "broker CPU s/1k",
        "other load %",
    ]
    rows = [
        [
            r.scenario,
            str(r.workers),
            str(r.events),
            str(r.delivered),
            _fmt(r.deliveries_per_s),
            _fmt(r.publish_per_s),
            _fmt(r.p50_ms, 1),
            _fmt(r.p95_ms, 1),
            _fmt(r.p99_ms, 1),
            _fmt(r.worker_cpu_per_1k, 3),
            _fmt(r.worker_peak_rss_mb, 1),
            _fmt(r.receiver_cpu_per_1k, 3),
            _fmt(r.broker_cpu_per_1k, 3),
            _fmt(r.other_load_pct),
        ]
        for r in results.rows
    ]
    print(_table(headers, rows), file=out)
    notes = [f"  {r.scenario} ({r.workers} w): {r.note.strip()}" for r in results.rows if r.note]
    if results.producer:
        print(file=out)
        print(
            _table(
                ["producer", "events", "confirmed/s", "call p50 ms", "call p99 ms"],
                [
                    [
                        p.mode,
                        str(p.events),
                        _fmt(p.confirmed_per_s),
                        _fmt(p.call_p50_ms, 2),
                        _fmt(p.call_p99_ms, 2),
                    ]
                    for p in results.producer
                ],
            ),
            file=out,
        )
    if results.sweep:
        print(file=out)
        print(
            _table(
                [
                    "subscribers",
                    "declare s",
                    "re-declare s",
                    "worker start s",
                    "RSS ready MB",
                    "peak RSS MB",
                    "deliveries",
                    "delivered",
                    "deliv/s",
                    "worker CPU s/1k",
                ],
                [
                    [
                        str(s.subscribers),
                        _fmt(s.declare_first_s, 2),
                        _fmt(s.declare_again_s, 2),
                        _fmt(s.start_s, 2),
                        _fmt(s.rss_ready_mb, 1),
                        _fmt(s.peak_rss_mb, 1),
                        str(s.deliveries),
                        str(s.delivered),
                        _fmt(s.deliveries_per_s),
                        _fmt(s.worker_cpu_per_1k, 3),
                    ]
                    for s in results.sweep
                ],
            ),
            file=out,
        )
        notes += [f"  {s.subscribers} subscribers: {s.note}" for s in results.sweep if s.note]
    if notes:
        print("\nnotes:", file=out)
        print("\n".join(notes), file=out)
    return out.getvalue()
