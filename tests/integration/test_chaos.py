"""Chaos: thousands of events, failing receivers, killed workers, a bounced broker.

Four subscribers whose receivers fail at random (500s, timeouts, connection
resets, slow answers); two worker processes competing for the same queues; one
of them SIGKILLed and restarted twice; the broker node stopped and started in
the middle; the producer keeps publishing through it all (retrying an event
under the same id when the broker is away). At the end every event id is
reconciled: delivered (a 2xx answer, at least once) or in a dead-letter queue.
Zero missing.

Short form in the default run (2,000 events); ``--long`` adds a bigger run
(10,000 events, four kills, two broker bounces).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, PublishError
from config.topology import dead_letter_queue, work_queue
from devtools.rabbitmq_node import LocalRabbitMQ
from producer import Publisher
from tests.support.amqp import depth, drain
from tests.support.worker_harness import ACCOUNT
from tests.support.worker_process import WorkerProcess

SECRET = "chaos-secret-0123456789abcdef"
SUBSCRIBERS = 4
TIMEOUT_SECONDS = 1.0

SUBSCRIBER_FILE = """\
subscribers:
{entries}
retry:
  delays_seconds: [0.5, 1]
security:
  allow_private_networks: true
circuit_breaker:
  failure_threshold: 6
  cooldown_seconds: 0.5
  max_cooldown_seconds: 2
"""
ENTRY = """\
  - id: {id}
    url: {url}
    secret: ${{TEST_SECRET}}
    account: acme
    events: ["{pattern}"]
    timeout_seconds: {timeout}
    connect_timeout_seconds: 1
    max_in_flight: 16
"""


@dataclass
class ChaosReceiver:
    """Answers at random: 2xx (fast or slow), 500, a hang past the timeout, or a reset."""

    seed: int
    delivered: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        event_id = request.headers.get("X-Webhook-Id", "?")
        roll = self._rng.random()
        if roll < 0.10:
            self.faults["http_500"] += 1
            return web.Response(status=500, text="chaos")
        if roll < 0.14:
            self.faults["timeout"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), TIMEOUT_SECONDS + 0.5)
            return web.Response(status=504)
        if roll < 0.18:
            self.faults["reset"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if roll < 0.28:
            self.faults["slow"] += 1
            await asyncio.sleep(0.2 + self._rng.random() * 0.3)
        # Counted before answering: a kill after this point means a duplicate, not a loss.
        self.delivered[event_id] += 1
        return web.json_response({"ok": True})

    async def start(self) -> ChaosReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class Producer(threading.Thread):
    """Publishes every event once, retrying under the same id while the broker is away."""

    def __init__(self, url: str, ids: list[tuple[str, str]], per_second: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ids = ids
        self.per_second = per_second
        self.published = 0
        self.retries = 0
        self.error: BaseException | None = None
        self._stop_flag = threading.Event()

    def run(self) -> None:
        try:
            publisher = Publisher(
                BrokerUrl.parse(self.url),
                connect_attempts=3,
                max_retry_seconds=5,
                backoff_max_seconds=1,
            )
            started = time.monotonic()
            for index, (event_type, event_id) in enumerate(self.ids):
                while not self._stop_flag.is_set():
                    try:
                        publisher.publish(
                            event_type, {"n": index}, event_id=event_id, account=ACCOUNT
                        )
                        break
                    except (BrokerUnavailableError, PublishError):
                        self.retries += 1
                        time.sleep(0.5)
                self.published += 1
                ahead = started + (index + 1) / self.per_second - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            publisher.close()
        except BaseException as exc:  # reported by the test, never swallowed
            self.error = exc

    def stop(self) -> None:
        self._stop_flag.set()


def _write_config(path: Path, receivers: list[ChaosReceiver], prefix: str) -> Path:
    entries = "".join(
        ENTRY.format(
            id=f"{prefix}-{i}", url=r.url, pattern=f"{prefix}{i}.*", timeout=TIMEOUT_SECONDS
        )
        for i, r in enumerate(receivers)
    )
    path.write_text(SUBSCRIBER_FILE.format(entries=entries.rstrip("\n")), encoding="utf-8")
    return path


async def _chaos(
    node: LocalRabbitMQ,
    tmp_path: Path,
    *,
    events: int,
    kills: int,
    bounces: int,
    per_second: float,
    settle_timeout: float,
) -> None:
    started = time.monotonic()
    vhost = f"chaos-{secrets.token_hex(3)}"
    url = await asyncio.to_thread(node.add_vhost, vhost)
    prefix = f"ch{secrets.token_hex(2)}"
    receivers = [await ChaosReceiver(seed=1000 + i).start() for i in range(SUBSCRIBERS)]
    config = _write_config(tmp_path / "subs.yaml", receivers, prefix)
    sub_ids = [f"{prefix}-{i}" for i in range(SUBSCRIBERS)]
    ids = [(f"{prefix}{n % SUBSCRIBERS}.event", f"evt_{prefix}_{n}") for n in range(events)]
    wanted = {event_id for _, event_id in ids}

    logs = tmp_path / "logs"
    logs.mkdir()
    generation = 0

    def new_worker(name: str) -> WorkerProcess:
        nonlocal generation
        generation += 1
        return WorkerProcess(url, config, SECRET, logs / f"{name}-{generation}.log", 2)

    steady = await new_worker("steady").start(ready_timeout=60)
    victim = await new_worker("victim").start(ready_timeout=60)
    producer = Producer(url, ids, per_second)
    dead: set[str] = set()
    timeline: list[str] = []
    try:
        producer.start()
        # Disturbances spread over the publishing window, kills and bounces alternating.
        window = events / per_second
        order: list[str] = []
        for i in range(max(kills, bounces)):
            order += (["kill"] if i < kills else []) + (["bounce"] if i < bounces else [])
        for step in order:
            await asyncio.sleep(window / (len(order) + 1))
            timeline.append(f"{step}@{time.monotonic() - started:.1f}s/{producer.published}")
            if step == "kill":
                await victim.kill()
                victim = await new_worker("victim").start(ready_timeout=90)
            else:
                await asyncio.to_thread(node.stop)
                await asyncio.sleep(1)
                await asyncio.to_thread(node.start)
        await asyncio.to_thread(producer.join, settle_timeout)
        assert producer.error is None, f"producer failed: {producer.error!r}"
        assert not producer.is_alive(), "producer did not finish"

        deadline = time.monotonic() + settle_timeout
        while True:
            delivered = set().union(*(r.delivered for r in receivers))
            for sub in sub_ids:
                letters = await asyncio.to_thread(drain, url, dead_letter_queue(sub))
                dead |= {str(g.properties.message_id) for g in letters}
            missing = wanted - delivered - dead
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        backlog = {s: await asyncio.to_thread(depth, url, work_queue(s)) for s in sub_ids}
    finally:
        producer.stop()
        for worker in (steady, victim):
            await worker.close()
        for r in receivers:
            await r.stop()

    deliveries = sum(sum(r.delivered.values()) for r in receivers)
    unique = len(wanted & delivered)
    faults: Counter[str] = Counter()
    for r in receivers:
        faults.update(r.faults)
    seconds = time.monotonic() - started
    print(
        f"\nchaos: events={events} delivered={unique} duplicates={deliveries - unique} "
        f"dead_lettered={len(dead)} missing={len(missing)} seconds={seconds:.1f} "
        f"kills={kills} broker_bounces={bounces} producer_retries={producer.retries} "
        f"faults={dict(sorted(faults.items()))} timeline={timeline}"
    )
    assert not missing, (
        f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}; work queues: {backlog}"
    )
    assert not (dead - wanted) and not (delivered - wanted - {"?"})
    with contextlib.suppress(Exception):
        await asyncio.to_thread(node.delete_vhost, vhost)


@pytest.mark.timeout(240)
async def test_chaos_short(rabbitmq_node: LocalRabbitMQ, tmp_path: Path) -> None:
    await _chaos(
        rabbitmq_node,
        tmp_path,
        events=2000,
        kills=2,
        bounces=1,
        per_second=150,
        settle_timeout=120,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_long(rabbitmq_node: LocalRabbitMQ, tmp_path: Path) -> None:
    await _chaos(
        rabbitmq_node,
        tmp_path,
        events=10_000,
        kills=4,
        bounces=2,
        per_second=200,
        settle_timeout=400,
    )
