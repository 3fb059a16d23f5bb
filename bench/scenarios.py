"""The scenarios of ``python -m bench`` (what each measures: docs/performance.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from bench import procstat
from bench.cpu_usage import Usage
from bench.processes import ROOT, SECRET_ENV, WorkerProcess, say
from bench.results import ProducerRow, Results, Row, SweepRow, percentile
from bench.stage import Stage
from producer import Publisher


class Bench(Stage):
    """Runs the delivery scenarios and the subscriber sweep; fills ``self.results``."""

    def scenario(
        self,
        name: str,
        *,
        workers: int,
        mode: str,
        fail_rate: float = 0.0,
        in_flight: int | None = None,
    ) -> Row:
        """mode: "flat" (publish flat out while delivering), "steady", or "backlog"."""
        assert self.receiver is not None
        plan = self.plan
        events = plan.events if mode != "steady" else int(plan.steady_rate * plan.steady_seconds)
        row = Row(name, workers, events)
        say(f"- {name}, {workers} worker(s) ...")
        subs = self._subscribers(1, in_flight)
        self._declare(subs)
        self.receiver.reset(fail_rate)
        procs: list[WorkerProcess] = []
        ids: list[str] = []
        publisher = Publisher(self.broker)
        try:
            publisher.connect()
            if mode == "backlog":
                seconds = self._publish_batch(publisher, events, ids)
                row.publish_per_s = events / seconds
                self.results.producer.append(
                    ProducerRow("publish_many(lists of 100)", events, events / seconds)
                )
                procs = self._start_workers(subs, workers)
                before = self._snapshot(procs)
                publish_started_ns = 0
            else:
                procs = self._start_workers(subs, workers)
                before = self._snapshot(procs)
                publish_started_ns = time.time_ns()
                if mode == "flat":
                    seconds = self._publish_batch(publisher, events, ids)
                else:
                    seconds = self._publish_steady(
                        publisher, plan.steady_rate, plan.steady_seconds, ids
                    )
                    events = row.events = len(ids)
                row.publish_per_s = events / seconds
            expected = self._expected(ids, fail_rate, 1)
            done, _ = self._wait_delivered(expected, plan.scenario_timeout)
            after = self._snapshot(procs)
            row.worker_peak_rss_mb = max(procstat.peak_rss_mb(p.pid) for p in procs)
        finally:
            publisher.close()
            for proc in procs:
                proc.stop()
        results = self.receiver.results()
        row.delivered = results["ok"]
        row.attempts = results["ok"] + results["failed"]
        if not done:
            row.note = f"incomplete: {row.delivered}/{expected} delivered in time"
        if results["rejected"]:
            row.note += f" {results['rejected']} bad signatures!"
        usage = Usage.between(before, after)
        per_1k = 1000 / max(1, row.delivered)
        row.worker_cpu_per_1k = usage.workers * per_1k
        row.receiver_cpu_per_1k = usage.receiver * per_1k
        row.broker_cpu_per_1k = usage.broker * per_1k if self.broker_pid else math.nan
        row.other_load_pct = usage.other_load_pct()
        if mode == "backlog":
            span = (results["last_ns"] - results["first_ns"]) / 1e9
        else:
            span = (results["last_ns"] - publish_started_ns) / 1e9
        if row.delivered > 1 and span > 0:
            row.deliveries_per_s = row.delivered / span
        if mode != "backlog":
            latencies = [
                (r - s) / 1e6
                for s, r in zip(results["sent_ns"], results["recv_ns"], strict=True)
                if s
            ]
            row.p50_ms = percentile(latencies, 50)
            row.p95_ms = percentile(latencies, 95)
            row.p99_ms = percentile(latencies, 99)
        self._cleanup_queues(subs)
        self.results.rows.append(row)
        return row

    def sweep_point(self, count: int) -> SweepRow:
        assert self.receiver is not None
        row = SweepRow(count)
        say(f"- {count} subscriber(s) ...")
        subs = self._subscribers(count)
        row.declare_first_s = self._declare(subs)
        row.declare_again_s = self._declare(subs)
        self.receiver.reset(0.0)
        events = max(1, self.plan.sweep_deliveries // count)
        row.deliveries = events * count
        procs: list[WorkerProcess] = []
        publisher = Publisher(self.broker)
        try:
            procs = self._start_workers(subs, 1)
            row.start_s = procs[0].start_seconds
            row.rss_ready_mb = procstat.rss_mb(procs[0].pid)
            before = self._snapshot(procs)
            started_ns = time.time_ns()
            self._publish_batch(publisher, events, [], chunk=max(1, 100 // count))
            done, _ = self._wait_delivered(row.deliveries, self.plan.scenario_timeout)
            after = self._snapshot(procs)
            row.peak_rss_mb = procstat.peak_rss_mb(procs[0].pid)
        finally:
            publisher.close()
            for proc in procs:
                proc.stop()
        results = self.receiver.results()
        row.delivered = results["ok"]
        if not done:
            row.note = f"incomplete: {row.delivered}/{row.deliveries}"
        span = (results["last_ns"] - started_ns) / 1e9
        if row.delivered and span > 0:
            row.deliveries_per_s = row.delivered / span
        usage = Usage.between(before, after)
        row.worker_cpu_per_1k = usage.workers * 1000 / max(1, row.delivered)
        self._cleanup_queues(subs)
        self.results.sweep.append(row)
        return row

    def probe_receiver(self) -> None:
        """The receiver alone, hit straight by an HTTP client: is it fast enough?"""
        assert self.receiver is not None
        say("- receiver alone ...")
        self.receiver.reset(0.0)
        before = procstat.cpu_seconds(self.receiver.pid)
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.probe",
                self.receiver.url,
                "--count",
                str(self.plan.probe_requests),
                "--seconds",
                "10",
            ],
            cwd=ROOT,
            env={**os.environ, SECRET_ENV: self.secret},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        used = procstat.cpu_seconds(self.receiver.pid) - before
        result = json.loads(output.strip().splitlines()[-1])
        self.results.receiver_alone_per_s = result["rate"]
        self.results.receiver_alone_cpu_per_1k = used * 1000 / max(1, result["requests"])

    def producer_alone(self) -> None:
        """Single publish() calls into a queue nobody consumes: the call's latency."""
        say("- publish() one at a time ...")
        subs = self._subscribers(1)
        self._declare(subs)
        with Publisher(self.broker) as publisher:
            self._publish_one_by_one(publisher, self.plan.single_publishes, 30.0)
            count = self.plan.events
            rate = self._publish_generated(publisher, count)
            self.results.producer.append(ProducerRow("publish_many(generator)", count, rate))
        self._cleanup_queues(subs)

    def run(self) -> Results:
        plan = self.plan
        if self.args.only in ("all", "delivery"):
            self.deliveries()
        if self.args.only in ("all", "sweep"):
            for count in plan.sweep:
                self.sweep_point(count)
        return self.results

    def deliveries(self) -> None:
        plan = self.plan
        self.probe_receiver()
        self.producer_alone()
        self.scenario("backlog drain", workers=1, mode="backlog")
        if not plan.tiny:
            wide = plan.wide_in_flight
            self.scenario(
                f"backlog drain, in flight {wide}", workers=1, mode="backlog", in_flight=wide
            )
            self.scenario(f"flat out, in flight {wide}", workers=1, mode="flat", in_flight=wide)
        for count in plan.workers:
            self.scenario("flat out", workers=count, mode="flat")
            self.scenario(f"steady {plan.steady_rate:g}/s", workers=count, mode="steady")
        pct = f"{plan.fail_rate:.0%}"
        self.scenario(f"retries {pct}, flat out", workers=1, mode="flat", fail_rate=plan.fail_rate)
        self.scenario(
            f"retries {pct}, steady {plan.steady_rate:g}/s",
            workers=1,
            mode="steady",
            fail_rate=plan.fail_rate,
        )
