"""Operational notices end to end: a real worker, a real broker, a real notifier.

A 410 and dead letters become signed notices the product page's verifier
(under node) accepts; a storm of dead letters is one notice with counts per
window; a failing notification URL leaves deliveries alone; an account's own
URL gets its own endpoints' notices only (store on SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from config.topology import OPERATIONAL_FACTS_EXCHANGE, OPERATIONAL_FACTS_QUEUE
from control.notifications.sender import RetryPlan
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from devtools.local_processes import free_ports
from tests.support.amqp import depth, publish_raw
from tests.support.node_bridge import NodeBridge, find_node_or_skip
from tests.support.notifier_harness import OPERATOR_SECRET, notice_of, running_notifier
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
)
from wire.operational_fact import OperationalFact, encode_fact
from wire.signature import verify

pytestmark = pytest.mark.integration

NO_BREAKER = {"enabled": False}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeBridge]:
    bridge = NodeBridge(find_node_or_skip())
    try:
        yield bridge
    finally:
        bridge.close()


def gone(_request: Received) -> web.Response:
    return web.Response(status=410, text="gone")


def refuse(_request: Received) -> web.Response:
    return web.Response(status=400, text="no")


def _assert_signed(received: Received, secret: str, node: NodeBridge) -> None:
    header = received.headers["X-Webhook-Signature"]
    assert node.page_verify(received.body, header, secret) is True
    verify(secret, received.body, header, tolerance_seconds=math.inf)
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Webhook-Event"] == notice_of(received)["event"]
    assert received.headers["X-Webhook-Id"].startswith("ntc_")


async def _assert_all_facts_acked(url: str) -> None:
    """Once the notifier has closed its channel: a fact it had not acked would be back."""
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(depth, url, OPERATIONAL_FACTS_QUEUE) == 0


async def test_a_410_sends_one_signed_paused_notice_the_page_verifies(
    vhost_url: str, node: NodeBridge
) -> None:
    endpoint = await Receiver(gone).start()
    operator = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("gone-shop", endpoint.url)])
    try:
        async with (
            running_notifier(vhost_url, operator_url=operator.url),
            running_worker(settings),
        ):
            [event_id] = await asyncio.to_thread(publish_orders, vhost_url, 1)
            await operator.wait_for(lambda r: len(r) >= 1, timeout=20)
            await asyncio.sleep(0.5)  # nothing else may follow
        await _assert_all_facts_acked(vhost_url)
    finally:
        await endpoint.stop()
        await operator.stop()
    [received] = operator.requests
    _assert_signed(received, OPERATOR_SECRET, node)
    notice = notice_of(received)
    assert set(notice) == {"event", "data", "timestamp"}
    assert notice["event"] == "endpoint.paused"
    data = notice["data"]
    assert (data["account"], data["endpoint"]) == ("acme", "gone-shop")
    # The 410's pause and its dead letter came together: one notice, both counted.
    assert data["counts"] == {
        "paused": 1,
        "circuit_opened": 0,
        "circuit_closed": 0,
        "dead_lettered": 1,
    }
    assert data["paused"]["event_id"] == event_id and data["paused"]["reason"] == "410 Gone"
    assert data["dead_lettered"]["first_event_id"] == event_id
    assert data["dead_lettered"]["reasons"] == {"gone": 1}
    datetime.fromisoformat(notice["timestamp"].replace("Z", "+00:00"))


async def test_a_storm_of_dead_letters_is_one_notice_per_window_with_counts(
    vhost_url: str, node: NodeBridge
) -> None:
    window = 4.0
    endpoint = await Receiver(refuse).start()
    operator = await Receiver().start()
    # One attempt only, so that each event is dead-lettered at once.
    shop = subscriber("storm-shop", endpoint.url, circuit_breaker=NO_BREAKER)
    settings = make_settings(vhost_url, [shop], delays=())
    try:
        async with (
            running_notifier(
                vhost_url, operator_url=operator.url, window_seconds=window, batch_seconds=0.2
            ),
            running_worker(settings),
        ):
            [first] = await asyncio.to_thread(publish_orders, vhost_url, 1, "a")
            await operator.wait_for(lambda r: len(r) >= 1, timeout=20)
            storm = await asyncio.to_thread(publish_orders, vhost_url, 40, "b")
            await endpoint.wait_for(lambda r: len(r) >= 41, timeout=30)
            await operator.wait_for(lambda r: len(r) >= 2, timeout=window + 10)
            await asyncio.sleep(window + 0.5)  # a third notice would come by now
        await _assert_all_facts_acked(vhost_url)
    finally:
        await endpoint.stop()
        await operator.stop()
    assert len(operator.requests) == 2, [notice_of(r)["data"]["counts"] for r in operator.requests]
    one, two = operator.requests
    for received in (one, two):
        _assert_signed(received, OPERATOR_SECRET, node)
    assert notice_of(one)["data"]["dead_lettered"]["count"] == 1
    assert notice_of(one)["data"]["dead_lettered"]["first_event_id"] == first
    storm_notice = notice_of(two)
    assert storm_notice["event"] == "endpoint.dead_lettered"
    dead = storm_notice["data"]["dead_lettered"]
    assert dead["count"] == 40 and dead["reasons"] == {"exhausted": 40}
    assert {dead["first_event_id"], dead["last_event_id"]} <= set(storm)
    # The rate limit: the second notice waited for the first one's window to end.
    assert two.at - one.at >= window - 0.1


async def test_a_failing_notification_url_does_not_hold_up_deliveries(vhost_url: str) -> None:
    release = asyncio.Event()

    async def hang(_request: Received) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=20)
        return web.Response(status=200)

    broken = await Receiver(hang).start()
    gone_endpoint = await Receiver(gone).start()
    healthy = await Receiver().start()
    subscribers = [
        subscriber("gone-one", gone_endpoint.url),
        subscriber("healthy-one", healthy.url),
    ]
    settings = make_settings(vhost_url, subscribers)
    plan = RetryPlan(attempts=2, first_backoff_seconds=0.1, timeout_seconds=0.5)
    try:
        async with (
            running_notifier(vhost_url, operator_url=broken.url, plan=plan, batch_seconds=0.1),
            running_worker(settings) as worker,
        ):
            await asyncio.to_thread(publish_orders, vhost_url, 1, "g")
            await broken.wait_for(lambda r: len(r) >= 1, timeout=20)
            # The notifier is now stuck on the hanging URL; deliveries go on.
            started = time.monotonic()
            ids = await asyncio.to_thread(publish_orders, vhost_url, 50, "h")
            await healthy.wait_for(lambda r: len(r) >= 51, timeout=30)
            elapsed = time.monotonic() - started
            assert worker.is_ready()
            # Both attempts of the notice time out, and it is given up (then acked).
            await broken.wait_for(lambda r: len(r) >= 2, timeout=10)
        await _assert_all_facts_acked(vhost_url)
    finally:
        release.set()
        for receiver in (broken, gone_endpoint, healthy):
            await receiver.stop()
    # Every event reached the healthy endpoint once (publish_orders sends one
    # per id to both subscribers' patterns; "gone-one" is paused after its 410).
    healthy_ids = {r.event_id for r in healthy.requests}
    assert set(ids) <= healthy_ids
    print(f"50 deliveries while the notification URL hung: {elapsed:.2f} s")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EndpointStore]:
    key = SecretStr(SecretsKey.generate().as_text())
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = EndpointStore.open(url, secrets_key=key, migrate=True)
    try:
        yield opened
    finally:
        opened.close()


async def test_each_account_gets_only_its_own_endpoints_notices(
    vhost_url: str, node: NodeBridge, store: EndpointStore
) -> None:
    acme_endpoint = await Receiver(gone).start()
    globex_endpoint = await Receiver(gone).start()
    operator = await Receiver().start()
    acme_box = await Receiver().start()
    globex_box = await Receiver().start()
    targets = store.notification_targets()
    acme = await asyncio.to_thread(targets.put, "acme", acme_box.url)
    globex = await asyncio.to_thread(targets.put, "globex", globex_box.url)
    subscribers = [
        subscriber("acme-shop", acme_endpoint.url),
        subscriber("globex-shop", globex_endpoint.url, account="globex"),
    ]
    settings = make_settings(vhost_url, subscribers)
    try:
        async with (
            running_notifier(vhost_url, operator_url=operator.url, accounts=targets),
            running_worker(settings),
        ):
            await asyncio.to_thread(publish_orders, vhost_url, 1, "a", account="acme")
            await asyncio.to_thread(publish_orders, vhost_url, 1, "g", account="globex")
            await operator.wait_for(lambda r: len(r) >= 2, timeout=20)
            await acme_box.wait_for(lambda r: len(r) >= 1, timeout=10)
            await globex_box.wait_for(lambda r: len(r) >= 1, timeout=10)
            await asyncio.sleep(0.5)
        await _assert_all_facts_acked(vhost_url)
    finally:
        for receiver in (acme_endpoint, globex_endpoint, operator, acme_box, globex_box):
            await receiver.stop()
    [to_acme] = acme_box.requests
    [to_globex] = globex_box.requests
    assert notice_of(to_acme)["data"]["endpoint"] == "acme-shop"
    assert notice_of(to_globex)["data"]["endpoint"] == "globex-shop"
    _assert_signed(to_acme, acme.secret.get_secret_value(), node)
    _assert_signed(to_globex, globex.secret.get_secret_value(), node)
    # Signed with the account's own secret: another account's does not verify it.
    header = to_acme.headers["X-Webhook-Signature"]
    assert node.page_verify(to_acme.body, header, globex.secret.get_secret_value()) is False
    assert sorted(notice_of(r)["data"]["account"] for r in operator.requests) == [
        "acme",
        "globex",
    ]
    for received in operator.requests:
        _assert_signed(received, OPERATOR_SECRET, node)


async def test_a_circuit_that_opens_and_closes_is_told_both_times(
    vhost_url: str, node: NodeBridge
) -> None:
    window = 2.0

    def flaky(_request: Received) -> web.Response:
        if len(endpoint.requests) <= 2:
            return web.Response(status=500, text="down")
        return web.json_response({"received": True})

    endpoint = await Receiver(flaky).start()
    operator = await Receiver().start()
    breaker = {"failure_threshold": 2, "cooldown_seconds": 0.5}
    shop = subscriber("flaky-shop", endpoint.url, max_in_flight=1, circuit_breaker=breaker)
    settings = make_settings(vhost_url, [shop], delays=(0.3, 0.3))
    try:
        async with (
            running_notifier(
                vhost_url, operator_url=operator.url, window_seconds=window, batch_seconds=0.2
            ),
            running_worker(settings),
        ):
            await asyncio.to_thread(publish_orders, vhost_url, 2, "c")
            await operator.wait_for(lambda r: len(r) >= 2, timeout=window + 15)
            await asyncio.sleep(0.5)
        await _assert_all_facts_acked(vhost_url)
    finally:
        await endpoint.stop()
        await operator.stop()
    notices = [notice_of(r) for r in operator.requests]
    assert [n["event"] for n in notices] == ["endpoint.circuit_opened", "endpoint.circuit_closed"]
    assert notices[0]["data"]["circuit"]["state"] == "open"
    assert notices[1]["data"]["circuit"]["state"] == "closed"
    assert notices[1]["data"]["dead_lettered"] is None
    for received in operator.requests:
        _assert_signed(received, OPERATOR_SECRET, node)


async def test_facts_of_a_notifier_stopped_mid_window_go_to_the_next_one(vhost_url: str) -> None:
    endpoint = await Receiver(refuse).start()
    operator = await Receiver().start()
    shop = subscriber("handover-shop", endpoint.url, circuit_breaker=NO_BREAKER)
    settings = make_settings(vhost_url, [shop], delays=())
    try:
        async with running_worker(settings):
            # The first notifier sends the first notice, then holds the next five
            # facts for its window, and is stopped before that window ends.
            async with running_notifier(
                vhost_url, operator_url=operator.url, window_seconds=60, batch_seconds=0.1
            ):
                await asyncio.to_thread(publish_orders, vhost_url, 1, "x")
                await operator.wait_for(lambda r: len(r) >= 1, timeout=20)
                await asyncio.to_thread(publish_orders, vhost_url, 5, "y")
                await endpoint.wait_for(lambda r: len(r) >= 6, timeout=20)
                await wait_until(
                    lambda: depth(vhost_url, OPERATIONAL_FACTS_QUEUE) == 0, 10, "facts taken"
                )
            assert len(operator.requests) == 1
            # Unacked, they went back to the queue with the first notifier's channel.
            await wait_until(lambda: depth(vhost_url, OPERATIONAL_FACTS_QUEUE) == 5, 10)
            async with running_notifier(
                vhost_url, operator_url=operator.url, window_seconds=60, batch_seconds=0.1
            ):
                await operator.wait_for(lambda r: len(r) >= 2, timeout=20)
        await _assert_all_facts_acked(vhost_url)
    finally:
        await endpoint.stop()
        await operator.stop()
    assert notice_of(operator.requests[1])["data"]["dead_lettered"]["count"] == 5


async def test_the_notifier_process_sends_serves_metrics_and_stops_on_sigterm(
    vhost_url: str, tmp_path: Path
) -> None:
    """``python -m cli.notifier`` as operators run it: environment in, SIGTERM out."""
    operator = await Receiver().start()
    port = free_ports(1)[0]
    secret_file = tmp_path / "notice-secret"
    secret_file.write_text(OPERATOR_SECRET + "\n")
    env = {
        **os.environ,
        "RABBITMQ_URL": vhost_url,
        "OPERATOR_NOTIFICATION_URL": operator.url,
        "OPERATOR_NOTIFICATION_SECRET_FILE": str(secret_file),
        "NOTIFICATION_BATCH_SECONDS": "0.1",
        "METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    env.pop("DATABASE_URL", None)
    log_path = tmp_path / "notifier.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.notifier", env=env, stdout=log, stderr=log
        )

    def answers(path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return bytes(r.read())
        except OSError:
            return None

    try:
        await wait_until(lambda: answers("/readyz") is not None, 30, "notifier ready")
        fact = OperationalFact("circuit_opened", "acme", "proc-shop", time.time())
        await asyncio.to_thread(
            publish_raw, vhost_url, OPERATIONAL_FACTS_EXCHANGE, "", encode_fact(fact)
        )
        await asyncio.to_thread(publish_raw, vhost_url, OPERATIONAL_FACTS_EXCHANGE, "", b"junk")
        await operator.wait_for(lambda r: len(r) >= 1, timeout=20)
        metrics_text = (await asyncio.to_thread(answers, "/metrics")) or b""
        assert b'webhook_notices_sent_total{destination="operator"} 1.0' in metrics_text
        assert b'webhook_notifier_facts_total{kind="unreadable"} 1.0' in metrics_text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await operator.stop()
    [received] = operator.requests
    verify(OPERATOR_SECRET, received.body, received.headers["X-Webhook-Signature"])
    assert notice_of(received)["event"] == "endpoint.circuit_opened"
    lines = log_path.read_text().splitlines()
    assert any('"operational_fact_unreadable"' in line for line in lines)
    assert OPERATOR_SECRET not in log_path.read_text()
    await _assert_all_facts_acked(vhost_url)
