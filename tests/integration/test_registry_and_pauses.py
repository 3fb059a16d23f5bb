"""Pause markers across worker replicas, the subscriber registry across restarts, and a
change made right after a create, on a real RabbitMQ.

What each test checks is behaviour (who pauses, what the registry holds, which URL
gets the event); how fast is the benchmark's job (bench.control_plane).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import pika
import pytest
import structlog
from aiohttp import web

from broker.url import BrokerUrl
from config.topology import REGISTRY_QUEUE, pause_marker_queue, work_queue
from tests.support.amqp import channel, depth
from tests.support.live_config import StoreEndpoints
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
    worker_status,
)
from worker import registry_keeper as keeper_module
from worker.pause import MARKER_ARGUMENTS, resume
from worker.registry import FORMAT_HEADER, Entry, decode
from worker.service import Worker

pytestmark = pytest.mark.integration

_wait = functools.partial(wait_until, interval=0.05)


def _lane(worker: Worker, sub_id: str) -> dict[str, Any]:
    [lane] = [s for s in worker_status(worker)["subscribers"] if s["id"] == sub_id]
    return lane


def _registry(url: str) -> list[tuple[set[str] | None, Any]]:
    """Every message in the registry queue (read, then put back): its ids, its format."""
    found = []
    with channel(url) as ch:
        while True:
            method, properties, body = ch.basic_get(REGISTRY_QUEUE, auto_ack=False)
            if method is None:
                break
            headers = properties.headers or {}
            found.append((decode(Entry(0, body, headers)), headers.get(FORMAT_HEADER)))
    return found  # closing the channel returned every message


def _registry_ids(url: str) -> set[str]:
    ids: set[str] = set()
    for found, _format in _registry(url):
        assert found is not None
        ids |= found
    return ids


# ------------------------------------------------------------------------ pauses


async def test_a_410_on_one_worker_pauses_every_worker_and_a_resume_resumes_them(
    vhost_url: str,
) -> None:
    gone = True

    def respond(_request: Received) -> web.Response:
        return web.Response(status=410) if gone else web.json_response({})

    receiver = await Receiver(respond).start()
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url, max_in_flight=1)])
    # Polls far apart: only the announcement of the marker can pause the other worker.
    rarely = {"pause_poll_seconds": 60.0}
    try:
        async with (
            running_worker(settings, **rarely) as first,
            running_worker(settings, **rarely) as second,
        ):
            with structlog.testing.capture_logs() as logs:
                # One event: one worker gets it, and the 410.
                await asyncio.to_thread(publish_orders, vhost_url, 1, "gone")
                for worker in (first, second):
                    await _wait(lambda w=worker: _lane(w, "shop")["paused"], 10, "paused")
                assert len(receiver.requests) == 1
                reasons = sorted(e["reason"] for e in logs if e["event"] == "subscriber_paused")
                # The other worker never saw a 410: it followed the marker.
                assert reasons == ["pause marker present", "receiver answered 410 Gone"]
                await asyncio.to_thread(publish_orders, vhost_url, 3, "waiting")
                await asyncio.sleep(0.5)
                assert len(receiver.requests) == 1
                assert await asyncio.to_thread(depth, vhost_url, work_queue("shop")) == 3
                # The marker keeps its note only (the workers' probes are refused).
                marker = pause_marker_queue("shop")
                assert await asyncio.to_thread(depth, vhost_url, marker) == 1

                gone = False
                assert await asyncio.to_thread(resume, settings.broker, "shop")
                for worker in (first, second):
                    await _wait(lambda w=worker: not _lane(w, "shop")["paused"], 10, "resumed")
                await receiver.wait_for(lambda rs: len(rs) == 4, timeout=10)
    finally:
        await receiver.stop()
    resumed = [e for e in logs if e["event"] == "subscriber_resumed"]
    assert [e["reason"] for e in resumed] == ["pause marker removed"] * 2


async def test_a_marker_made_before_is_honoured_and_keeps_only_its_note(vhost_url: str) -> None:
    """A marker from before (no arguments) pauses, and is re-created with its note."""
    with channel(vhost_url) as ch:
        ch.queue_declare(pause_marker_queue("old"), durable=True)
        ch.basic_publish("", pause_marker_queue("old"), b'{"reason": "410 Gone"}')
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("old", receiver.url)])
    try:
        async with running_worker(settings, pause_poll_seconds=0.2) as worker:
            assert (await asyncio.to_thread(_lane, worker, "old"))["paused"] is True
            await asyncio.sleep(1)  # a few polls
            with channel(vhost_url) as ch:
                method, _properties, note = ch.basic_get(pause_marker_queue("old"))
                assert method is not None and method.message_count == 0
            assert note == b'{"reason": "410 Gone"}'
    finally:
        await receiver.stop()


async def test_a_marker_whose_announcement_was_lost_is_found_by_the_poll(
    vhost_url: str,
) -> None:
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("quiet", receiver.url)])
    try:
        async with running_worker(
            settings, pause_poll_seconds=0.2, full_pause_check_every=2
        ) as worker:
            assert (await asyncio.to_thread(_lane, worker, "quiet"))["paused"] is False
            with channel(vhost_url) as ch:  # a marker, and no announcement
                ch.queue_declare(
                    pause_marker_queue("quiet"), durable=True, arguments=MARKER_ARGUMENTS
                )
            await _wait(lambda: _lane(worker, "quiet")["paused"], 10, "paused by the poll")
            with channel(vhost_url) as ch:
                ch.queue_delete(pause_marker_queue("quiet"))
            await _wait(lambda: not _lane(worker, "quiet")["paused"], 10, "resumed by the poll")
    finally:
        await receiver.stop()


# ---------------------------------------------------------------------- registry


async def test_the_registry_is_one_message_across_restarts_and_the_old_layout_migrates(
    vhost_url: str,
) -> None:
    receiver = await Receiver().start()
    with channel(vhost_url) as ch:
        # What an earlier version left: one message per id.
        ch.queue_declare(REGISTRY_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare(work_queue("old-a"), durable=True, arguments={"x-queue-type": "quorum"})
        ch.basic_publish("", work_queue("old-a"), b"left behind")
        for old_id in ("x", "old-a", "old-b"):
            ch.basic_publish(
                "", REGISTRY_QUEUE, old_id.encode(), pika.BasicProperties(delivery_mode=2)
            )
    both = make_settings(vhost_url, [subscriber("x", receiver.url), subscriber("y", receiver.url)])
    try:
        async with running_worker(both) as worker:
            removed = (await asyncio.to_thread(worker_status, worker))[
                "removed_subscribers_with_queues"
            ]
        assert removed == [{"id": "old-a", "queue": work_queue("old-a"), "messages": 1}]
        # old-b had no queue left: forgotten.  One message, in the new format.
        assert [(ids, fmt) for ids, fmt in _registry(vhost_url)] == [({"x", "y", "old-a"}, 2)]

        only_x = make_settings(vhost_url, [subscriber("x", receiver.url)])
        async with running_worker(only_x) as worker:
            removed = (await asyncio.to_thread(worker_status, worker))[
                "removed_subscribers_with_queues"
            ]
        assert [r["id"] for r in removed] == ["old-a", "y"]
        assert [(ids, fmt) for ids, fmt in _registry(vhost_url)] == [({"x", "y", "old-a"}, 2)]
    finally:
        await receiver.stop()


# ----------------------------------------------------------------------- changes


@pytest.fixture
def store(tmp_path: Path, vhost_url: str) -> Any:
    endpoints = StoreEndpoints(f"sqlite:///{tmp_path / 'store.db'}", vhost_url, kind="sqlite")
    yield endpoints
    endpoints.close()


@pytest.fixture
async def slow_registry(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[threading.Event]:
    """Recording an addition in the registry blocks until the test sets the event."""
    release = threading.Event()
    recorded: list[Collection[str]] = []
    real = keeper_module.record

    def record(broker: BrokerUrl, ids: Collection[str]) -> None:
        release.wait(timeout=60)
        recorded.append(ids)
        real(broker, ids)

    monkeypatch.setattr(keeper_module, "record", record)
    try:
        yield release
    finally:
        release.set()


async def test_a_change_right_after_a_create_does_not_wait_for_the_registry(
    store: StoreEndpoints, vhost_url: str, slow_registry: threading.Event
) -> None:
    receiver = await Receiver().start()
    await store.create(f"{receiver.url}/bystander", account="acme")
    settings = store.settings(make_settings(vhost_url, []), reconcile_seconds=30.0)
    try:
        async with running_worker(settings) as worker:
            endpoint_id, _ = await store.create(f"{receiver.url}/first", account="globex")
            await store.announce()
            await _wait(lambda: worker.reconciler.version >= store.version, 10, "created")
            # The registry is still busy with the addition; the next change goes ahead.
            await store.update(endpoint_id, url=f"{receiver.url}/second")
            await store.announce()
            await _wait(lambda: worker.reconciler.version >= store.version, 10, "changed")
            assert not slow_registry.is_set()
            await asyncio.to_thread(publish_orders, vhost_url, 1, "after", account="globex")
            await receiver.wait_for(
                lambda rs: any(r.path.endswith("/second") for r in rs), timeout=10
            )
            assert not any(r.path.endswith("/first") for r in receiver.requests)
            slow_registry.set()
            await _wait(lambda: endpoint_id in _registry_ids(vhost_url), 10, "recorded")
    finally:
        await receiver.stop()
