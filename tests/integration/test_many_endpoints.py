"""A worker with hundreds of endpoints: every one consumed after the pipelined start and
after a reconnect, and ``/metrics`` answering while deliveries go on.

docs/scaling.md measures the same at 10,000 endpoints (``python -m bench.control_plane``).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
import structlog

from config.topology import work_queue
from tests.support.amqp import channel
from tests.support.receiver import Receiver
from tests.support.worker_harness import make_settings, publish_orders, running_worker, subscriber

pytestmark = pytest.mark.integration

ENDPOINTS = 300


def _consumers(url: str, ids: list[str]) -> dict[str, int]:
    """Consumers on each endpoint's work queue, as the broker counts them."""
    with channel(url) as ch:
        return {
            endpoint_id: ch.queue_declare(
                work_queue(endpoint_id), passive=True
            ).method.consumer_count
            for endpoint_id in ids
        }


def _scrape(port: int | None) -> tuple[float, str]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return time.monotonic() - started, body


def _paths(receiver: Receiver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in receiver.requests:
        counts[request.path] = counts.get(request.path, 0) + 1
    return counts


async def test_hundreds_of_endpoints_are_consumed_after_start_and_after_a_reconnect(
    vhost_url: str,
) -> None:
    receiver = await Receiver().start()
    # Some with an in-flight budget of their own (another prefetch: another qos in
    # the pipeline), and some switched off (never consumed).
    subscribers = [
        subscriber(
            f"many-{i:03d}",
            f"{receiver.url}/{i}",
            max_in_flight=3 if i % 7 == 0 else 8,
            enabled=i % 50 != 49,
        )
        for i in range(ENDPOINTS)
    ]
    enabled = [s.id for s in subscribers if s.enabled]
    disabled = [s.id for s in subscribers if not s.enabled]
    expected = {s.id: 1 if s.enabled else 0 for s in subscribers}
    paths = {f"/webhook/{i}" for i, s in enumerate(subscribers) if s.enabled}
    try:
        async with running_worker(make_settings(vhost_url, subscribers), ready_timeout=120) as w:
            assert await asyncio.to_thread(_consumers, vhost_url, [s.id for s in subscribers]) == (
                expected
            )
            # Idle endpoints have no per-endpoint series; switched-off ones say so.
            _, page = await asyncio.to_thread(_scrape, w.health.port)
            assert 'webhook_circuit_state{state="closed",subscriber="many-000"}' not in page
            for endpoint_id in disabled:
                assert f'webhook_subscriber_disabled{{subscriber="{endpoint_id}"}} 1.0' in page

            # One event of the account reaches every enabled endpoint.
            await asyncio.to_thread(publish_orders, vhost_url, 1, "first")
            await receiver.wait_for(lambda _rs: set(_paths(receiver)) == paths, 60)

            # A deleted work queue cancels its consumer: the worker reconnects,
            # declares it again and starts every consumer again, pipelined.
            with structlog.testing.capture_logs() as logs:
                with channel(vhost_url) as ch:
                    ch.queue_delete(work_queue(enabled[-1]))
                deadline = time.monotonic() + 60
                while not any(e["event"] == "consuming" for e in logs):
                    assert time.monotonic() < deadline, "not consuming again in 60 s"
                    await asyncio.sleep(0.1)
            assert any(e["event"] == "consumer_cancelled_by_broker" for e in logs)
            [consuming] = [e for e in logs if e["event"] == "consuming"]
            assert consuming["queues"] == len(enabled)
            assert await asyncio.to_thread(_consumers, vhost_url, [s.id for s in subscribers]) == (
                expected
            )

            # /metrics answers while a burst is being delivered.
            before = len(receiver.requests)
            await asyncio.to_thread(publish_orders, vhost_url, 5, "burst")
            scrapes: list[float] = []
            during: list[int] = []
            while len(receiver.requests) < before + 5 * len(enabled):
                seconds, page = await asyncio.to_thread(_scrape, w.health.port)
                scrapes.append(seconds)
                during.append(len(receiver.requests))
                assert "webhook_deliveries_total{" in page
                assert len(scrapes) < 500, "the burst was not delivered"
            await receiver.wait_for(lambda rs: len(rs) >= before + 5 * len(enabled), 60)
            # Delivered endpoints now export their series, circuit state included.
            _, page = await asyncio.to_thread(_scrape, w.health.port)
            assert 'webhook_circuit_state{state="closed",subscriber="many-000"} 1.0' in page
    finally:
        await receiver.stop()
    counts = _paths(receiver)
    assert set(counts) == paths
    assert all(count == 6 for count in counts.values()), "each endpoint: 1 + 5 events"
    assert scrapes and max(scrapes) < 5
    # Deliveries went on between scrapes (the scrapes did not stop them).
    assert len(set(during)) > 1 or during[0] >= before + 5 * len(enabled)
