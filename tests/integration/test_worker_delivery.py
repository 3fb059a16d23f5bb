"""The worker against a real broker and real HTTP receivers."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import structlog
from aiohttp import web

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.topology import EVENTS_EXCHANGE, dead_letter_queue, event_routing_key, work_queue
from producer import Publisher
from tests.support.amqp import depth, drain, publish_raw
from tests.support.node_bridge import find_node_or_skip
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    ACCOUNT,
    SECRET,
    make_settings,
    running_worker,
    subscriber,
    wait_until,
)
from wire import contract
from wire.samples import sample_data
from wire.signature import verify

SUPPORT = Path(__file__).parent.parent / "support"

TRICKY = {
    "id": "tricky",
    "customerName": "রহিম উদ্দিন 😀",
    "note": 'quote " backslash \\ newline \n tab \t nul \u0000 line-sep \u2028',
    "floats": [1250.0, 0.1, 1e21, 1e-7, -0.0, 123456789.125, 5e-324],
    "big": 2**64,
    "10": "index-like keys come first in JS",
    "2": "and sort numerically",
    "nested": {"a": [{"b": None, "c": True}], "z": {}},
}


@pytest.fixture
def node_receiver() -> Iterator[tuple[str, str]]:
    """The page's verifier running in node; yields (webhook url, log url)."""
    node = find_node_or_skip()
    process = subprocess.Popen(
        [node, str(SUPPORT / "node_receiver.js"), SECRET], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/webhook", f"http://127.0.0.1:{port}/log"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _node_log(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.loads(response.read())  # type: ignore[no-any-return]


def _order(order_id: str, event_type: str = "order.created") -> dict[str, object]:
    return {**sample_data(event_type), "id": order_id}


def _publish(url: str, events: list[tuple[str, dict[str, object]]]) -> list[str]:
    with Publisher(BrokerUrl.parse(url)) as publisher:
        return [publisher.publish(event_type, data, account=ACCOUNT) for event_type, data in events]


async def test_page_samples_and_tricky_payloads_verify_in_node(
    vhost_url: str, node_receiver: tuple[str, str]
) -> None:
    webhook_url, log_url = node_receiver
    settings = make_settings(vhost_url, [subscriber("node-shop", webhook_url)])
    events = [(e, sample_data(e)) for e in ("order.created", "order.updated", "order.cancelled")]
    events.append(("order.note_added", TRICKY))
    async with running_worker(settings):
        ids = await asyncio.to_thread(_publish, vhost_url, events)
        await wait_until(lambda: len(_node_log(log_url)) >= len(ids), timeout=20)
    records = _node_log(log_url)
    assert [r["valid"] for r in records] == [True] * len(ids), [r["error"] for r in records]
    assert sorted(r["id"] for r in records) == sorted(ids)
    for record in records:
        assert record["contentType"] == "application/json"
        assert record["attempt"] == "1"
        assert record["event"] == record["body"]["event"]  # type: ignore[index]
        assert str(record["userAgent"]).startswith("Chatsvia-Webhooks/")
        assert set(record["body"]) == {"event", "data", "timestamp"}  # type: ignore[arg-type]
    tricky = next(r for r in records if r["event"] == "order.note_added")
    assert tricky["body"]["data"]["customerName"] == TRICKY["customerName"]  # type: ignore[index]
    assert await asyncio.to_thread(depth, vhost_url, work_queue("node-shop")) == 0


async def test_failed_attempts_retry_through_delay_queues_with_same_id(vhost_url: str) -> None:
    failures = {"first": 1, "second": 2}

    def respond(request: Received) -> web.Response:
        data = json.loads(request.body)["data"]
        if request.attempt <= failures[data["id"]]:
            return web.Response(status=500, text="boom")
        return web.json_response({"received": True})

    receiver = await Receiver(respond).start()
    try:
        settings = make_settings(vhost_url, [subscriber("retry-shop", receiver.url)], delays=(1, 1))
        async with running_worker(settings):
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(
                    _publish,
                    vhost_url,
                    [("order.created", _order("first")), ("order.created", _order("second"))],
                )
                await receiver.wait_for(
                    lambda rs: sum(1 for r in rs if r.headers.get("X-Webhook-Attempt")) >= 5,
                    timeout=20,
                )
                await asyncio.sleep(0.3)  # let the last ack land
    finally:
        await receiver.stop()

    by_event: dict[str, list[Received]] = {}
    for request in receiver.requests:
        by_event.setdefault(json.loads(request.body)["data"]["id"], []).append(request)
    assert [r.attempt for r in by_event["first"]] == [1, 2]
    assert [r.attempt for r in by_event["second"]] == [1, 2, 3]
    for requests in by_event.values():
        assert len({r.event_id for r in requests}) == 1
        assert len({r.body for r in requests}) == 1
        gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
        assert all(0.9 <= gap <= 6 for gap in gaps), gaps
        for r in requests:
            verify(SECRET, r.body, r.headers["X-Webhook-Signature"])
    scheduled = [e for e in logs if e["event"] == "retry_scheduled"]
    assert {(e["subscriber"], e["next_attempt"]) for e in scheduled} == {
        ("retry-shop", 2),
        ("retry-shop", 3),
    }
    assert all("event_id" in e and "attempt" in e for e in scheduled)


async def test_three_failures_dead_letter_with_operator_headers(vhost_url: str) -> None:
    receiver = await Receiver(lambda _r: web.Response(status=503, text="down")).start()
    try:
        settings = make_settings(
            vhost_url, [subscriber("dead-shop", receiver.url)], delays=(0.3, 0.3)
        )
        async with running_worker(settings):
            [event_id] = await asyncio.to_thread(
                _publish, vhost_url, [("order.cancelled", _order("x", "order.cancelled"))]
            )
            await wait_until(
                lambda: depth(vhost_url, dead_letter_queue("dead-shop")) == 1, timeout=20
            )
    finally:
        await receiver.stop()
    assert [r.attempt for r in receiver.requests] == [1, 2, 3]
    [letter] = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("dead-shop"))
    headers = letter.headers
    assert letter.properties.message_id == event_id
    assert letter.properties.type == "order.cancelled"
    assert headers[contract.SUBSCRIBER] == "dead-shop"
    assert headers[contract.ATTEMPTS] == 3
    assert headers[contract.LAST_STATUS] == 503
    assert headers[contract.LAST_ERROR] == "HTTP 503"
    assert headers[contract.DEAD_LETTER_REASON] == "exhausted"
    assert headers[contract.FIRST_ATTEMPT_AT] <= headers[contract.LAST_ATTEMPT_AT]
    assert json.loads(letter.body)["event"] == "order.cancelled"


@pytest.mark.parametrize(
    ("body", "properties", "reason"),
    [
        (b"not json", pika.BasicProperties(), "not valid JSON"),
        (b"\xff\xfe{}", pika.BasicProperties(), "not valid JSON"),
        (b'{"data": {}, "timestamp": "x"}', pika.BasicProperties(), "no 'event'"),
        (b"[1, 2]", pika.BasicProperties(), "not a JSON object"),
        (
            b'{"event": "order.created", "data": {}, "timestamp": "2026-01-01T00:00:00.000Z"}',
            pika.BasicProperties(headers={contract.ATTEMPT: 9}),
            "outside 1-3",
        ),
    ],
)
async def test_poison_messages_go_to_the_dlq_with_a_reason(
    vhost_url: str, body: bytes, properties: pika.BasicProperties, reason: str
) -> None:
    receiver = await Receiver().start()
    try:
        settings = make_settings(vhost_url, [subscriber("poison-shop", receiver.url)])
        async with running_worker(settings):
            await asyncio.to_thread(
                publish_raw, vhost_url, "", work_queue("poison-shop"), body, properties
            )
            # The worker keeps serving: a good event after the poison one arrives.
            await asyncio.to_thread(_publish, vhost_url, [("order.created", _order("fine"))])
            await receiver.wait_for(lambda rs: len(rs) == 1, timeout=15)
            await wait_until(
                lambda: depth(vhost_url, dead_letter_queue("poison-shop")) == 1, timeout=15
            )
    finally:
        await receiver.stop()
    [letter] = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("poison-shop"))
    assert letter.body == body
    assert reason in letter.headers[contract.DEAD_LETTER_REASON]
    assert letter.headers[contract.DEAD_LETTER_REASON].startswith("poison: ")


async def test_outcomes_timeout_refused_redirect_private(
    vhost_url: str, unused_tcp_port: int
) -> None:
    async def slow(_r: Received) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    slow_receiver = await Receiver(slow).start()
    redirect_receiver = await Receiver(
        lambda _r: web.Response(status=302, headers={"Location": "http://127.0.0.1:1/"})
    ).start()
    healthy = await Receiver().start()
    subs = [
        subscriber("slow", slow_receiver.url, timeout_seconds=0.5),
        subscriber("refused", f"http://127.0.0.1:{unused_tcp_port}/hook"),
        subscriber("redirect", redirect_receiver.url),
        subscriber("healthy", healthy.url),
    ]
    try:
        settings = make_settings(vhost_url, subs, delays=())
        async with running_worker(settings):
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(_publish, vhost_url, [("order.created", _order("o"))])
                await wait_until(
                    lambda: all(
                        depth(vhost_url, dead_letter_queue(s)) == 1
                        for s in ("slow", "refused", "redirect")
                    ),
                    timeout=20,
                )
    finally:
        for r in (slow_receiver, redirect_receiver, healthy):
            await r.stop()
    assert len(healthy.requests) == 1
    assert len(redirect_receiver.requests) == 1  # the Location was not followed
    failed = {e["subscriber"]: e for e in logs if e["event"] == "delivery_failed"}
    assert failed["slow"]["outcome"] == "timeout"
    assert failed["refused"]["outcome"] == "connection_error"
    assert failed["redirect"]["outcome"] == "http_error"
    assert failed["redirect"]["status"] == 302
    for name in ("slow", "refused", "redirect"):
        [letter] = await asyncio.to_thread(drain, vhost_url, dead_letter_queue(name))
        assert letter.headers[contract.DEAD_LETTER_REASON] == "exhausted"
    assert all(SECRET not in json.dumps(e, default=str) for e in logs)


async def test_private_addresses_refused_unless_allowed(vhost_url: str) -> None:
    receiver = await Receiver().start()
    try:
        subs = [
            subscriber("literal", receiver.url),
            subscriber("by-name", f"http://localhost:{receiver.port}/webhook"),
        ]
        settings = make_settings(vhost_url, subs, delays=(), allow_private=False)
        async with running_worker(settings):
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(_publish, vhost_url, [("order.created", _order("o"))])
                await wait_until(
                    lambda: all(
                        depth(vhost_url, dead_letter_queue(s)) == 1 for s in ("literal", "by-name")
                    ),
                    timeout=20,
                )
    finally:
        await receiver.stop()
    assert receiver.requests == []
    outcomes = {e["subscriber"]: e["outcome"] for e in logs if e["event"] == "delivery_failed"}
    assert outcomes == {"literal": "forbidden_address", "by-name": "forbidden_address"}


async def test_unroutable_retry_target_leaves_message_unacked(vhost_url: str) -> None:
    """If the delay queue is missing, the failed message must stay in the work queue."""
    receiver = await Receiver(lambda _r: web.Response(status=500)).start()
    try:
        settings = make_settings(vhost_url, [subscriber("lonely", receiver.url)], delays=(30,))
        await asyncio.to_thread(
            declare_topology, settings.broker, settings.subscribers, settings.retry
        )
        # Sabotage: remove the delay queue's binding so the retry copy is unroutable.
        from config.topology import delay_exchange, delay_queue
        from tests.support.amqp import channel

        def unbind() -> None:
            with channel(vhost_url) as ch:
                ch.queue_unbind(delay_queue(30), delay_exchange(30), routing_key="")

        async with running_worker(settings, requeue_delay_seconds=0.2) as worker:
            await asyncio.to_thread(unbind)
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(
                    publish_raw,
                    vhost_url,
                    EVENTS_EXCHANGE,
                    event_routing_key(ACCOUNT, "order.created"),
                    b'{"event":"order.created","data":{"id":"a"},'
                    b'"timestamp":"2026-01-01T00:00:00.000Z"}',
                    pika.BasicProperties(
                        delivery_mode=2, message_id="evt_keep", headers={contract.ACCOUNT: ACCOUNT}
                    ),
                )
                # Refused move -> requeued -> delivered again, same event id.
                await receiver.wait_for(lambda rs: len(rs) >= 2, timeout=10)
            assert {r.event_id for r in receiver.requests} == {"evt_keep"}
            assert any(e["event"] == "move_refused_requeueing" for e in logs)
            assert worker.in_flight <= 1
    finally:
        await receiver.stop()
    # Not acked: after the worker stopped, the message is back in its work queue.
    assert await asyncio.to_thread(depth, vhost_url, work_queue("lonely")) == 1


async def test_a_hanging_subscriber_does_not_hold_back_the_others(vhost_url: str) -> None:
    async def hang(_r: Received) -> web.Response:
        await asyncio.sleep(4)
        return web.json_response({})

    stuck = await Receiver(hang).start()
    quick = await Receiver().start()
    subs = [
        subscriber("stuck", stuck.url, timeout_seconds=5, max_in_flight=2),
        subscriber("quick", quick.url, max_in_flight=8),
    ]
    try:
        settings = make_settings(vhost_url, subs, delays=(30,), grace=0.5)
        async with running_worker(settings):
            started = asyncio.get_running_loop().time()
            await asyncio.to_thread(
                _publish, vhost_url, [("order.created", _order(f"o{i}")) for i in range(40)]
            )
            await quick.wait_for(lambda rs: len(rs) == 40, timeout=10)
            elapsed = asyncio.get_running_loop().time() - started
            # The stuck subscriber holds only its own prefetch, nothing more.
            assert len(stuck.requests) == 2
            assert elapsed < 4, f"healthy deliveries waited on the stuck ones ({elapsed:.1f} s)"
    finally:
        await stuck.stop()
        await quick.stop()
    # Abandoned at shutdown, not lost: all 40 are still queued for the stuck subscriber.
    assert await asyncio.to_thread(depth, vhost_url, work_queue("stuck")) == 40


async def test_a_deleted_work_queue_is_redeclared_and_consumed_again(vhost_url: str) -> None:
    receiver = await Receiver().start()
    try:
        settings = make_settings(vhost_url, [subscriber("oops", receiver.url)])
        async with running_worker(settings) as worker:
            with structlog.testing.capture_logs() as logs:

                def delete_queue() -> None:
                    from tests.support.amqp import channel

                    with channel(vhost_url) as ch:
                        ch.queue_delete(work_queue("oops"))

                await asyncio.to_thread(delete_queue)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while not any(e["event"] == "consuming" for e in logs) or not worker.is_ready():
                    assert loop.time() < deadline, "worker did not come back"
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(_publish, vhost_url, [("order.created", _order("again"))])
            await receiver.wait_for(lambda rs: len(rs) == 1, timeout=10)
    finally:
        await receiver.stop()
    assert any(e["event"] == "consumer_cancelled_by_broker" for e in logs)
