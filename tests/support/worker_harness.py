"""Run a real Worker in the test's event loop against a real broker."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from broker.url import BrokerUrl
from config.settings import Settings
from config.subscribers import RetryPolicy, SecurityPolicy, Subscriber
from producer import Publisher
from wire.samples import sample_data
from worker.service import Worker

SECRET = "whsec-test-secret-0123456789"
# The merchant every test endpoint belongs to unless a test says otherwise.
ACCOUNT = "acme"


def subscriber(sub_id: str, url: str, **extra: Any) -> Subscriber:
    fields: dict[str, Any] = {
        "id": sub_id,
        "account": ACCOUNT,
        "url": url,
        "secret": SECRET,
        "events": ("order.*",),
        "timeout_seconds": 5,
    }
    fields.update(extra)
    return Subscriber.model_validate(fields)


def make_settings(
    url: str,
    subscribers: Sequence[Subscriber],
    *,
    delays: Sequence[float] = (0.5, 0.5),
    allow_private: bool = True,
    grace: float = 10.0,
) -> Settings:
    return Settings(
        broker=BrokerUrl.parse(url),
        config_path=Path("test-subscribers.yaml"),
        metrics_port=0,
        log_format="console",
        shutdown_grace_seconds=grace,
        subscribers=tuple(subscribers),
        retry=RetryPolicy(delays_seconds=tuple(delays)),
        security=SecurityPolicy(allow_private_networks=allow_private),
    )


@asynccontextmanager
async def running_worker(
    settings: Settings, *, ready_timeout: float = 30, **options: Any
) -> AsyncIterator[Worker]:
    """A started worker, ready and consuming; stopped gracefully on exit."""
    worker = Worker(settings, **options)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + ready_timeout
    try:
        while not worker.is_ready():
            if task.done():
                task.result()
                raise AssertionError("worker stopped before it was ready")
            if time.monotonic() > deadline:
                raise AssertionError("worker not ready in time")
            await asyncio.sleep(0.05)
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=60)


def publish_orders(url: str, count: int, prefix: str = "o", *, account: str = ACCOUNT) -> list[str]:
    """Publish ``count`` page-sample order.created events of ``account``, ids ``<prefix>0..``."""
    base = sample_data("order.created")
    with Publisher(BrokerUrl.parse(url)) as publisher:
        return [
            publisher.publish("order.created", {**base, "id": f"{prefix}{i}"}, account=account)
            for i in range(count)
        ]


def worker_status(worker: Worker) -> dict[str, Any]:
    """The worker's ``GET /status`` document."""
    url = f"http://127.0.0.1:{worker.health.port}/status"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.loads(response.read())  # type: ignore[no-any-return]


async def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str = "condition", interval: float = 0.1
) -> None:
    """Poll a blocking ``predicate`` (in a thread) until true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        await asyncio.sleep(interval)
