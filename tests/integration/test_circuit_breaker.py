"""Circuit breaker, 410 Gone pause/resume and Retry-After against a real broker and receivers."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from cli.worker import main as worker_cli
from cli.worker import resume_subscriber
from config.topology import dead_letter_queue, pause_marker_queue, work_queue
from tests.support.amqp import depth, drain
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
    worker_status,
)
from wire import contract
from worker import metrics
from worker.pause import mark_paused
from worker.service import Worker

# Circuit transitions are quick; poll twice as often as the default.
_wait = functools.partial(wait_until, interval=0.05)


def _lane(worker: Worker, sub_id: str) -> dict[str, Any]:
    """One subscriber's entry of GET /status (call from a thread: the server is on our loop)."""
    [lane] = [s for s in worker_status(worker)["subscribers"] if s["id"] == sub_id]
    return lane


async def _lane_now(worker: Worker, sub_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(_lane, worker, sub_id)


async def test_failing_subscriber_opens_probes_with_growing_cooldown_and_closes(
    vhost_url: str,
) -> None:
    broken = True

    def respond(_r: Received) -> web.Response:
        return web.Response(status=500) if broken else web.json_response({"ok": True})

    receiver = await Receiver(respond).start()
    breaker = {"failure_threshold": 3, "cooldown_seconds": 1, "max_cooldown_seconds": 4}
    sub = subscriber("flaky", receiver.url, max_in_flight=1, circuit_breaker=breaker)
    # A long delay: failed events wait out the test in the delay queue.
    settings = make_settings(vhost_url, [sub], delays=(60,))
    try:
        async with running_worker(settings) as worker:
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(publish_orders, vhost_url, 12)
                await _wait(lambda: _lane(worker, "flaky")["circuit"] == "open", 10, "open")
                opened_at = time.monotonic()
                lane = await _lane_now(worker, "flaky")
                assert lane["consuming"] is False and lane["consecutive_failures"] == 3
                # With prefetch 1 at most one more message was on its way when it opened.
                attempts_when_open = len(receiver.requests)
                assert 3 <= attempts_when_open <= 4
                await asyncio.sleep(0.6)
                assert len(receiver.requests) == attempts_when_open  # nothing burnt while open
                queued = await asyncio.to_thread(depth, vhost_url, work_queue("flaky"))
                assert queued == 12 - attempts_when_open  # safe in the work queue

                # First probe after 1 s fails: open again for 2 s.
                await _wait(lambda: len(receiver.requests) == attempts_when_open + 1, 5, "probe")
                assert time.monotonic() - opened_at >= 0.9
                await _wait(lambda: _lane(worker, "flaky")["circuit"] == "open", 5, "reopen")
                assert (await _lane_now(worker, "flaky"))["cooldown_seconds"] == 2
                broken = False
                await receiver.wait_for(lambda rs: len(rs) >= attempts_when_open + 2, timeout=5)
                gap = receiver.requests[-1].at - receiver.requests[-2].at
                assert gap >= 1.9, f"second probe came {gap:.2f} s after the first"
                await _wait(lambda: _lane(worker, "flaky")["circuit"] == "closed", 5, "closed")
                # Closed: the whole backlog flows again at the full prefetch.
                await _wait(
                    lambda: depth(vhost_url, work_queue("flaky")) == 0, 10, "backlog delivered"
                )
                lane = await _lane_now(worker, "flaky")
                assert lane["consuming"] is True and lane["prefetch"] == 1
    finally:
        await receiver.stop()

    circuit = [e["event"] for e in logs if e["event"].startswith("circuit_")]
    assert circuit == [
        "circuit_opened",
        "circuit_half_open",
        "circuit_opened",
        "circuit_half_open",
        "circuit_closed",
    ]
    opened = [e for e in logs if e["event"] == "circuit_opened"]
    assert [e["cooldown_seconds"] for e in opened] == [1, 2]
    assert all(e["subscriber"] == "flaky" for e in opened)
    assert metrics.CIRCUIT_STATE.labels("flaky", "closed")._value.get() == 1
    assert metrics.CIRCUIT_STATE.labels("flaky", "open")._value.get() == 0
    assert metrics.CIRCUIT_STATE.labels("flaky", "half_open")._value.get() == 0
    assert metrics.CIRCUIT_TRANSITIONS.labels("flaky", "open")._value.get() >= 2


async def test_probe_restores_the_full_prefetch(vhost_url: str) -> None:
    """After a successful probe the subscriber gets its max_in_flight back, not 1."""
    broken = True

    async def respond(_r: Received) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(status=503) if broken else web.json_response({})

    receiver = await Receiver(respond).start()
    breaker = {"failure_threshold": 2, "cooldown_seconds": 0.5, "max_cooldown_seconds": 1}
    sub = subscriber("wide", receiver.url, max_in_flight=8, circuit_breaker=breaker)
    settings = make_settings(vhost_url, [sub], delays=(60,))
    try:
        async with running_worker(settings) as worker:
            await asyncio.to_thread(publish_orders, vhost_url, 2, "first")
            await _wait(lambda: _lane(worker, "wide")["circuit"] == "open", 10, "open")
            broken = False
            await asyncio.to_thread(publish_orders, vhost_url, 40, "later")
            await _wait(lambda: _lane(worker, "wide")["circuit"] == "closed", 10, "closed")
            # The consumer is swapped just after the state changes.
            await _wait(lambda: _lane(worker, "wide")["prefetch"] == 8, 5, "full prefetch")
            started = time.monotonic()
            await _wait(lambda: depth(vhost_url, work_queue("wide")) == 0, 15, "drained")
            # 40 x 0.2 s one at a time would take 8 s; eight at a time about 1 s.
            assert time.monotonic() - started < 4
    finally:
        await receiver.stop()


async def test_gone_pauses_until_an_operator_resumes(vhost_url: str) -> None:
    gone = True

    def respond(_r: Received) -> web.Response:
        return web.Response(status=410, text="no such hook") if gone else web.json_response({})

    receiver = await Receiver(respond).start()
    healthy = await Receiver().start()
    subs = [
        subscriber("closed-shop", receiver.url, max_in_flight=1),
        subscriber("open-shop", healthy.url),
    ]
    settings = make_settings(vhost_url, subs, delays=(0.3, 0.3))
    try:
        async with running_worker(settings, pause_poll_seconds=0.3) as worker:
            with structlog.testing.capture_logs() as logs:
                ids = await asyncio.to_thread(publish_orders, vhost_url, 5)
                await _wait(lambda: _lane(worker, "closed-shop")["paused"], 10, "paused")
                await healthy.wait_for(lambda rs: len(rs) == 5, timeout=10)
                await _wait(
                    lambda: depth(vhost_url, dead_letter_queue("closed-shop")) >= 1, 5, "dlq"
                )
                await asyncio.sleep(0.5)
                # The 410'd event is dead-lettered (no retry); the rest wait, unattempted.
                assert 1 <= len(receiver.requests) <= 2
                attempted = len(receiver.requests)
                remaining = await asyncio.to_thread(depth, vhost_url, work_queue("closed-shop"))
                assert remaining == 5 - attempted
                marker = await asyncio.to_thread(
                    depth, vhost_url, pause_marker_queue("closed-shop")
                )
                assert marker == 1
                assert metrics.SUBSCRIBER_PAUSED.labels("closed-shop")._value.get() == 1
                assert (await _lane_now(worker, "closed-shop"))["consuming"] is False

                # The operator fixed it with the subscriber, then: webhook-worker resume closed-shop
                gone = False
                assert await asyncio.to_thread(resume_subscriber, settings, "closed-shop") == 0
                await receiver.wait_for(lambda rs: len(rs) == 5, timeout=10)
                await _wait(lambda: not _lane(worker, "closed-shop")["paused"], 5, "resumed")
    finally:
        await receiver.stop()
        await healthy.stop()

    letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("closed-shop"))
    assert [g.headers[contract.DEAD_LETTER_REASON] for g in letters] == ["gone"] * attempted
    assert all(g.headers[contract.LAST_STATUS] == 410 for g in letters)
    delivered = {r.event_id for r in receiver.requests}
    assert delivered == set(ids)  # each event reached the receiver exactly once
    names = [e["event"] for e in logs]
    assert "subscriber_paused" in names and "subscriber_resumed" in names
    paused = next(e for e in logs if e["event"] == "subscriber_paused")
    assert paused["resume_with"] == "webhook-worker resume closed-shop"


async def test_a_worker_starting_later_honours_the_pause_and_the_cli_resumes(
    vhost_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("later", receiver.url)])
    config = tmp_path / "subs.yaml"
    config.write_text(
        "subscribers:\n  - id: later\n    url: " + receiver.url + "\n    secret: s3cret\n"
        "    account: acme\n    events: ['order.*']\nsecurity: {allow_private_networks: true}\n"
    )
    monkeypatch.setenv("RABBITMQ_URL", vhost_url)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(config))
    try:
        await asyncio.to_thread(
            mark_paused, settings.broker, "later", reason="410 Gone", event_id="evt_x"
        )
        async with running_worker(settings, pause_poll_seconds=0.2) as worker:
            lane = await _lane_now(worker, "later")
            assert lane["paused"] is True and lane["consuming"] is False
            await asyncio.to_thread(publish_orders, vhost_url, 3)
            await asyncio.sleep(0.5)
            assert receiver.requests == []
            assert await asyncio.to_thread(depth, vhost_url, work_queue("later")) == 3
            assert await asyncio.to_thread(worker_cli, ["resume", "later"]) == 0
            await receiver.wait_for(lambda rs: len(rs) == 3, timeout=5)
        assert "later: resumed" in capsys.readouterr().out
        assert await asyncio.to_thread(worker_cli, ["resume", "later"]) == 0
        assert "later: was not paused" in capsys.readouterr().out
        assert await asyncio.to_thread(worker_cli, ["resume", "nobody"]) == 2
        assert "no subscriber 'nobody'" in capsys.readouterr().err
    finally:
        await receiver.stop()


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_picks_a_long_enough_delay_queue(vhost_url: str, status: int) -> None:
    answers: list[float] = []

    def respond(request: Received) -> web.Response:
        answers.append(request.at)
        if request.attempt == 1:
            return web.Response(status=status, headers={"Retry-After": "2"})
        return web.json_response({})

    receiver = await Receiver(respond).start()
    # Our own first delay (0.2 s) is too short for Retry-After: 2; the 3 s queue is not.
    settings = make_settings(vhost_url, [subscriber("busy", receiver.url)], delays=(0.2, 3))
    try:
        async with running_worker(settings):
            await asyncio.to_thread(publish_orders, vhost_url, 1)
            await receiver.wait_for(lambda rs: len(rs) == 2, timeout=10)
    finally:
        await receiver.stop()
    assert [r.attempt for r in receiver.requests] == [1, 2]
    assert 2.9 <= answers[1] - answers[0] <= 5


async def test_retry_after_longer_than_every_delay_dead_letters(vhost_url: str) -> None:
    receiver = await Receiver(
        lambda _r: web.Response(status=429, headers={"Retry-After": "3600"})
    ).start()
    settings = make_settings(vhost_url, [subscriber("tired", receiver.url)], delays=(0.2, 1))
    try:
        async with running_worker(settings):
            await asyncio.to_thread(publish_orders, vhost_url, 1)
            await _wait(lambda: depth(vhost_url, dead_letter_queue("tired")) == 1, 10, "dlq")
    finally:
        await receiver.stop()
    [letter] = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("tired"))
    assert letter.headers[contract.DEAD_LETTER_REASON] == "retry_after_too_long"
    assert letter.headers[contract.LAST_STATUS] == 429
    assert len(receiver.requests) == 1
