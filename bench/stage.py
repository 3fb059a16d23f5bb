"""What every benchmark scenario stands on: the broker, the receiver, workers, publishing.

Everything runs on this machine and talks over loopback only: a RabbitMQ node
(``$RABBITMQ_URL``, else a throwaway ``LocalRabbitMQ``), the receiver
(``bench.receiver``, its own process, verifying every signature) and worker
processes (``python -m worker run``, exactly as deployed).  Each scenario gets
fresh subscribers (and, on our own node, a fresh vhost); every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from bench import procstat
from bench.common import SENT_FIELD, eventually_delivered
from bench.cpu_usage import Snapshot
from bench.plan import Plan
from bench.processes import SECRET_ENV, BenchError, ReceiverProcess, WorkerProcess, say
from bench.results import ProducerRow, Results, percentile
from broker import pika_internals
from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.subscribers import RetryPolicy, Subscriber
from config.topology import dead_letter_queue, work_queue
from devtools.rabbitmq_node import LocalRabbitMQ, rabbitmq_available
from producer import Publisher
from wire.samples import sample_data

EVENT = "order.created"
# Every bench endpoint belongs to this merchant (routing is per account).
ACCOUNT = "bench-merchant"


def _data(now_ns: int | None = None) -> dict[str, Any]:
    data = sample_data(EVENT)
    data[SENT_FIELD] = str(time.time_ns() if now_ns is None else now_ns)
    return data


# The circuit breaker is set never to trip: with 10% of attempts failing at
# random it otherwise opens now and then, and its cooldown (5 s and up), not the
# retry path, would make the figures of the retry scenarios.
SUBSCRIBER_FILE = """\
subscribers:
{entries}
retry:
  delays_seconds: [{delay}, {delay}]
circuit_breaker:
  failure_threshold: 10000
security:
  allow_private_networks: true
"""

ENTRY = """\
  - id: {id}
    account: {account}
    url: {url}
    secret: ${{{env}}}
    events: ["order.*"]
    timeout_seconds: 10
    max_in_flight: {in_flight}
"""


class Stage:
    """The run's broker, receiver and deadline, and the steps scenarios are made of."""

    def __init__(self, plan: Plan, args: argparse.Namespace, workdir: Path) -> None:
        self.plan = plan
        self.args = args
        self.workdir = workdir
        self.secret = secrets.token_hex(16)
        self.token = secrets.token_hex(2)
        self.counter = 0
        self.deadline = time.monotonic() + plan.run_timeout
        self.node: LocalRabbitMQ | None = None
        self.broker_url = os.environ.get("RABBITMQ_URL", "")
        self.broker_pid: int | None = None
        self.receiver: ReceiverProcess | None = None
        self.results = Results()
        self.retry = RetryPolicy(delays_seconds=(plan.retry_delay, plan.retry_delay))

    # --- set-up / tear-down

    def setup(self) -> None:
        if not self.broker_url:
            if not rabbitmq_available():
                raise BenchError(
                    "no broker: set RABBITMQ_URL or install rabbitmq-server "
                    "(apt-get install -y rabbitmq-server)"
                )
            say("starting a throwaway RabbitMQ node ...")
            self.node = LocalRabbitMQ().start()
            self.broker_url = self.node.url
        broker = BrokerUrl.parse(self.broker_url)
        params = broker.parameters()[0]
        if params.host not in ("127.0.0.1", "localhost", "::1"):
            raise BenchError(f"the benchmark only uses a broker on loopback, not {params.host}")
        self.broker = broker
        self.broker_shown = broker.redacted
        self.broker_pid = procstat.pid_listening_on(params.port)
        self.receiver = ReceiverProcess(self.workdir, self.secret, self.args.receiver)

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
        if self.node is not None:
            self.node.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run took longer than {self.plan.run_timeout:.0f} s; stopping")
        return left

    # --- building blocks

    def _subscribers(self, count: int, in_flight: int | None = None) -> list[Subscriber]:
        """Fresh subscribers for the next scenario (and, on our own node, a fresh vhost).

        A vhost per scenario keeps what one scenario leaves on the broker (the
        worker's subscriber registry, for one) from costing the next one anything.
        With ``$RABBITMQ_URL`` the given vhost is shared, and the ids alone differ.
        """
        self.counter += 1
        prefix = f"b{self.token}x{self.counter}"
        if self.node is not None:
            self.broker_url = self.node.add_vhost(f"bench-{prefix}")
            self.broker = BrokerUrl.parse(self.broker_url)
        assert self.receiver is not None
        return [
            Subscriber.model_validate(
                {
                    "id": f"{prefix}-{i}",
                    "account": ACCOUNT,
                    "url": f"{self.receiver.url}/{prefix}-{i}",
                    "secret": self.secret,
                    "events": ["order.*"],
                    "max_in_flight": in_flight or self.plan.in_flight,
                }
            )
            for i in range(count)
        ]

    def _config(self, subs: Sequence[Subscriber]) -> Path:
        path = self.workdir / f"subscribers-{subs[0].id.rsplit('-', 1)[0]}.yaml"
        entries = "".join(
            ENTRY.format(
                id=s.id, account=ACCOUNT, url=s.url, env=SECRET_ENV, in_flight=s.max_in_flight
            )
            for s in subs
        )
        path.write_text(
            SUBSCRIBER_FILE.format(entries=entries.rstrip("\n"), delay=self.plan.retry_delay)
        )
        return path

    def _declare(self, subs: Sequence[Subscriber]) -> float:
        started = time.monotonic()
        declare_topology(self.broker, subs, self.retry)
        return time.monotonic() - started

    def _start_workers(self, subs: Sequence[Subscriber], count: int) -> list[WorkerProcess]:
        config = self._config(subs)
        workers = []
        try:
            for index in range(count):
                log = self.workdir / f"{config.stem}-worker{index}.log"
                worker = WorkerProcess(
                    self.broker_url, config, self.secret, log, self.args.log_level
                )
                workers.append(worker)
                worker.start(timeout=min(120.0, self._left()))
        except BaseException:
            for worker in workers:
                worker.stop()
            raise
        return workers

    def _snapshot(self, workers: Sequence[WorkerProcess]) -> Snapshot:
        assert self.receiver is not None
        return Snapshot.take([w.pid for w in workers], self.receiver.pid, self.broker_pid)

    def _expected(self, ids: Sequence[str], fail_rate: float, subscribers: int) -> int:
        if fail_rate <= 0:
            return len(ids) * subscribers
        # Ids are per event; with several subscribers each delivery has the same id.
        delivered = sum(eventually_delivered(i, fail_rate, self.retry.max_attempts) for i in ids)
        return delivered * subscribers

    def _wait_delivered(self, expected: int, timeout: float) -> tuple[bool, dict[str, Any]]:
        assert self.receiver is not None
        deadline = time.monotonic() + min(timeout, self._left())
        last_ok, last_change = -1, time.monotonic()
        while True:
            stats = self.receiver.stats()
            if stats["ok"] >= expected:
                return True, stats
            if stats["ok"] != last_ok:
                last_ok, last_change = stats["ok"], time.monotonic()
            now = time.monotonic()
            # Nothing new for a long while means something is stuck: stop waiting.
            if now > deadline or now - last_change > max(15.0, self.plan.retry_delay * 20):
                return False, stats
            time.sleep(0.02)

    def _settle(self, limit: float = 20.0) -> None:
        """Wait (bounded) until the broker is nearly idle, so scenarios do not overlap."""
        if not self.broker_pid:
            time.sleep(1.0)
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = procstat.cpu_seconds(self.broker_pid)
            time.sleep(0.5)
            if procstat.cpu_seconds(self.broker_pid) - before < 0.05:  # under 10% of a core
                return

    def _cleanup_queues(self, subs: Sequence[Subscriber]) -> None:
        """Delete the scenario's queues (and with them its bindings), pipelined."""
        params = self.broker.parameters()[0]
        try:
            connection = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            say(f"  (cleanup skipped: {exc!r})")
            return
        try:
            channel = connection.channel()
            for sub in subs:
                for queue in (work_queue(sub.id), dead_letter_queue(sub.id)):
                    pika_internals.channel_under(channel).queue_delete(queue)  # nowait
            channel.queue_declare("", exclusive=True)  # a round trip: all deletes done
        except pika.exceptions.AMQPError as exc:
            say(f"  (cleanup incomplete: {exc!r})")
        finally:
            with contextlib.suppress(Exception):
                connection.close()
        self._settle()

    # --- publishing

    def _publish_batch(
        self, publisher: Publisher, count: int, ids: list[str], chunk: int = 100
    ) -> float:
        """Publish ``count`` events as lists of ``chunk`` (``publish_many``); return the seconds.

        Each list is built (and its events stamped) just before it is published.
        """
        started = time.monotonic()
        sent = 0
        while sent < count:
            self._left()
            size = min(chunk, count - sent)
            ids.extend(publisher.publish_many([(ACCOUNT, EVENT, _data()) for _ in range(size)]))
            sent += size
        return time.monotonic() - started

    def _publish_generated(self, publisher: Publisher, count: int) -> float:
        """Publish ``count`` events from a generator (each sent as it is made)."""
        started = time.monotonic()
        give_up = started + 120

        def events() -> Iterator[tuple[str, str, dict[str, Any]]]:
            for _ in range(count):
                if time.monotonic() > give_up:
                    return
                yield ACCOUNT, EVENT, _data()

        done = len(publisher.publish_many(events()))
        return done / (time.monotonic() - started)

    def _publish_steady(
        self, publisher: Publisher, rate: float, seconds: float, ids: list[str]
    ) -> float:
        """Offer ``rate`` events/s for ``seconds`` (open loop, confirms pipelined).

        Each event is stamped and handed to ``publish_many`` when it is due, so a
        slow confirm never delays the next event; returns the seconds it took.
        """
        count = max(1, int(rate * seconds))
        started = time.perf_counter()
        give_up = started + seconds * 3 + 10  # bounded in time as well as in count

        def paced() -> Iterator[tuple[str, str, dict[str, Any]]]:
            for index in range(count):
                wait = started + index / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if time.perf_counter() > give_up:
                    return
                yield ACCOUNT, EVENT, _data()

        ids.extend(publisher.publish_many(paced()))
        return time.perf_counter() - started

    def _publish_one_by_one(self, publisher: Publisher, count: int, seconds: float) -> None:
        """``publish()`` back to back (each waits for its confirm): call latency."""
        calls: list[float] = []
        started = time.perf_counter()
        for _ in range(count):
            if time.perf_counter() - started > seconds:
                break
            data = _data()
            t0 = time.perf_counter()
            publisher.publish(EVENT, data, account=ACCOUNT)
            calls.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        self.results.producer.append(
            ProducerRow(
                "publish(), one at a time",
                len(calls),
                len(calls) / elapsed,
                percentile(calls, 50) * 1000,
                percentile(calls, 99) * 1000,
            )
        )
