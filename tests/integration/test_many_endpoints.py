"""A worker with hundreds of endpoints: every one consumed after the pipelined start and
after a reconnect, spread over the consumer channels, ``/metrics`` answering while
deliveries go on; and a consumer channel closed under the worker.

docs/scaling.md measures the same at 10,000 endpoints (``python -m bench.control_plane``).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import pytest
import structlog

from broker.async_channel import AmqpChannel, ConsumeRequest
from config.topology import work_queue
from tests.support.amqp import channel
from tests.support.receiver import Receiver
from tests.support.worker_harness import (
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
    worker_status,
)
from worker.consumer_channels import CONSUMER_CHANNELS, channel_index
from worker.pause import mark_paused, resume
from worker.service import Worker

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


class ConsumeSpy:
    """Which channel each ``consume_many`` started each queue on (a wrapper, nothing changed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[tuple[AmqpChannel, str]] = []
        original = AmqpChannel.consume_many

        async def consume_many(
            channel: AmqpChannel, requests: Sequence[ConsumeRequest]
        ) -> list[str]:
            self.started.extend((channel, queue) for queue, _, _ in requests)
            return await original(channel, requests)

        monkeypatch.setattr(AmqpChannel, "consume_many", consume_many)

    def check_spread(self, ids: list[str]) -> None:
        """Every id's queue started once, on the channel its id picks, over every channel."""
        channels: dict[str, AmqpChannel] = {queue: ch for ch, queue in self.started}
        assert sorted(queue for _, queue in self.started) == sorted(work_queue(i) for i in ids)
        by_index: dict[int, set[int]] = {}
        for endpoint_id in ids:
            index = channel_index(endpoint_id, CONSUMER_CHANNELS)
            by_index.setdefault(index, set()).add(id(channels[work_queue(endpoint_id)]))
        # One channel per index, a different one for each index, all of them used.
        assert all(len(objects) == 1 for objects in by_index.values())
        assert len({next(iter(objects)) for objects in by_index.values()}) == CONSUMER_CHANNELS
        self.started.clear()


def _paths(receiver: Receiver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in receiver.requests:
        counts[request.path] = counts.get(request.path, 0) + 1
    return counts


async def test_hundreds_of_endpoints_are_consumed_after_start_and_after_a_reconnect(
    vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ConsumeSpy(monkeypatch)
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
            spy.check_spread(enabled)
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
            assert consuming["channels"] == CONSUMER_CHANNELS
            assert await asyncio.to_thread(_consumers, vhost_url, [s.id for s in subscribers]) == (
                expected
            )
            spy.check_spread(enabled)

            # /metrics answers while a burst is being delivered, on every channel (an
            # ack on the wrong channel would close it: no reconnect may happen).
            before = len(receiver.requests)
            with structlog.testing.capture_logs() as burst_events:
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
            assert not [e for e in burst_events if e["event"] == "broker_connection_lost"]
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


def _lane(worker: Worker, endpoint_id: str) -> dict[str, Any]:
    [lane] = [s for s in worker_status(worker)["subscribers"] if s["id"] == endpoint_id]
    return lane


async def _reconnected(logs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The ``broker_connection_lost`` line, once the worker consumes again (``count`` queues)."""
    deadline = time.monotonic() + 60
    while not any(e["event"] == "consuming" for e in logs):
        assert time.monotonic() < deadline, "not consuming again in 60 s"
        await asyncio.sleep(0.05)
    [consuming] = [e for e in logs if e["event"] == "consuming"]
    assert consuming["queues"] == count
    [lost] = [e for e in logs if e["event"] == "broker_connection_lost"]
    return lost


async def test_a_consumer_channel_closed_under_the_worker_ends_in_a_clean_reconnect(
    vhost_url: str,
) -> None:
    """A refused consume (its queue deleted while the lane was paused) and an unknown
    delivery tag each close one consumer channel: the worker names the channel and the
    queue, reconnects, and every endpoint is consumed once and delivered to again."""
    receiver = await Receiver().start()
    count = 4 * CONSUMER_CHANNELS
    subscribers = [subscriber(f"chan-{i:02d}", f"{receiver.url}/{i}") for i in range(count)]
    ids = [s.id for s in subscribers]
    victim = ids[5]
    queue = work_queue(victim)
    settings = make_settings(vhost_url, subscribers)
    try:
        async with running_worker(settings, pause_poll_seconds=60.0) as w:
            # Paused (the announcement reaches the worker at once): no consumer.
            await asyncio.to_thread(
                mark_paused, settings.broker, victim, reason="test", event_id=""
            )
            await wait_until(lambda: _lane(w, victim)["paused"], 10, "paused")
            with channel(vhost_url) as ch:
                ch.queue_delete(queue)  # an operator's mistake; nothing consumed it

            # Resumed: the consume is refused, and the broker closes that channel.
            with structlog.testing.capture_logs() as logs:
                assert await asyncio.to_thread(resume, settings.broker, victim)
                lost = await _reconnected(logs, count)
            [failed] = [e for e in logs if e["event"] == "consumer_change_failed"]
            assert failed["subscriber"] == victim and queue in failed["error"]
            assert lost["consumer_channel"] == channel_index(victim, CONSUMER_CHANNELS)
            assert queue in lost["reason"] and "404" in lost["reason"]
            # Re-declared on the reconnect, and consumed like every other one.
            assert await asyncio.to_thread(_consumers, vhost_url, ids) == dict.fromkeys(ids, 1)
            await asyncio.to_thread(publish_orders, vhost_url, 1, "after-refusal")
            await receiver.wait_for(lambda rs: len(rs) >= count, 30)
            # Settled (acks go out at the end of a loop turn), or the reconnect
            # below would bring a message back: at least once, but not this test's point.
            await wait_until(lambda: w.in_flight == 0, 10, "deliveries settled")
            await asyncio.sleep(0.2)

            # Any other channel error (here an ack of a delivery tag the broker never
            # sent) closes that one channel: the same clean reconnect.
            other = (channel_index(victim, CONSUMER_CHANNELS) + 1) % CONSUMER_CHANNELS
            channels = w._lanes._channels
            assert channels is not None and len(channels) == CONSUMER_CHANNELS
            with structlog.testing.capture_logs() as logs:
                assert channels[other].settle(10**9, ack=True)
                lost = await _reconnected(logs, count)
            assert lost["consumer_channel"] == other and "406" in lost["reason"]
            assert await asyncio.to_thread(_consumers, vhost_url, ids) == dict.fromkeys(ids, 1)
            await asyncio.to_thread(publish_orders, vhost_url, 1, "after-406")
            await receiver.wait_for(lambda rs: len(rs) >= 2 * count, 30)
    finally:
        await receiver.stop()
    counts = _paths(receiver)
    assert set(counts) == {f"/webhook/{i}" for i in range(count)}
    assert all(n == 2 for n in counts.values()), counts
