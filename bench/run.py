"""``python -m bench``: the end-to-end benchmark (what it measures: docs/performance.md).

Everything runs on this machine and talks over loopback only (see ``bench.stage``).
Every load loop is bounded in count and in time, and the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.plan import PLANS
from bench.processes import BenchError, say, work_directory
from bench.report import render
from bench.results import results_as_json
from bench.scenarios import Bench
from config.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end benchmark: broker, receiver, worker processes, publisher, "
        "all on this machine over loopback. Prints one set of tables.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const="quick",
        help="smaller run (about a minute or two)",
    )
    size.add_argument(
        "--tiny",
        dest="size",
        action="store_const",
        const="tiny",
        help="smallest run (a few hundred events, 1 subscriber; the smoke test)",
    )
    parser.set_defaults(size="full")
    parser.add_argument("--events", type=int, help="events per flat-out scenario")
    parser.add_argument("--rate", type=float, help="steady offered load, events/s")
    parser.add_argument("--steady-seconds", type=float, help="length of a steady scenario")
    parser.add_argument("--subscribers", help="sweep points, e.g. 1,10,100,1000")
    parser.add_argument(
        "--only",
        choices=("all", "delivery", "sweep"),
        default="all",
        help="run only the delivery scenarios or only the subscriber sweep",
    )
    parser.add_argument("--in-flight", type=int, help="max_in_flight of each subscriber")
    parser.add_argument("--receiver", choices=("lean", "aiohttp"), default="lean")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the workers' LOG_LEVEL (info logs every delivery, the default)",
    )
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="keep logs and subscriber files in this directory")
    args = parser.parse_args(argv)

    plan = PLANS[args.size]
    overrides: dict[str, Any] = {}
    if args.events:
        overrides["events"] = args.events
    if args.rate:
        overrides["steady_rate"] = args.rate
    if args.steady_seconds:
        overrides["steady_seconds"] = args.steady_seconds
    if args.subscribers:
        overrides["sweep"] = tuple(int(x) for x in args.subscribers.split(","))
    if args.in_flight:
        overrides["in_flight"] = args.in_flight
    if overrides:
        plan = replace(plan, **overrides)

    # The producer logs like its CLI does: warnings and errors only.
    configure_logging("json", "warning", stream=sys.stderr)
    with work_directory(args.keep, "wh-bench-") as workdir:
        bench = Bench(plan, args, workdir)
        try:
            bench.setup()
            results = bench.run()
        except BenchError as exc:
            say(f"bench: error: {exc}")
            return 1
        finally:
            bench.close()
    text = render(results, plan, args, bench.broker_shown)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results_as_json(results), indent=2))
    return 0
