"""Resend and recover end to end: a real broker, worker, recorder and receiver, on both
databases (SQLite, and a fresh PostgreSQL database per test).

The endpoints live in the endpoint store (the API looks them up there) and the
worker serves them as the store gives them, with their own secrets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import delete

from broker.declarer import apply_topology
from broker.url import BrokerUrl
from cli.log import main as log_main
from config.errors import NotFoundError, TopologyError
from config.subscribers import RetryPolicy, Subscriber
from config.topology import build_topology, work_queue
from control.api.app import create_app
from control.api.auth import ApiTokens
from control.api.services import ApiServices
from control.delivery_log.resend import resend
from control.delivery_log.resend_request import Matching, OneEvent
from control.delivery_log.resender import LogResender
from control.store.attempt_tables import EventBodyRow
from control.store.attempts import AttemptStore
from control.store.database import Database, DatabaseUrl
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointInput
from control.store.resend_selection import EventFilter, ResendScope
from tests.integration.test_delivery_log import record, running_recorder
from tests.support.amqp import depth
from tests.support.api import AUTH, TOKEN, FakePauses, FakeProbe, RecordedNotices
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import make_settings, publish_orders, running_worker, wait_until
from wire import contract
from wire.signature import verify


@pytest.fixture
def endpoints(database_url: str) -> Iterator[EndpointStore]:
    key = SecretStr(SecretsKey.generate().as_text())
    store = EndpointStore.open(database_url, secrets_key=key, migrate=True)
    yield store
    store.close()


@pytest.fixture
def log(database_url: str, endpoints: EndpointStore) -> Iterator[AttemptStore]:
    store = AttemptStore.open(database_url)
    yield store
    store.close()


def endpoint(store: EndpointStore, account: str, url: str) -> Subscriber:
    """A stored endpoint of ``account``, as the worker serves it (id and secret included)."""
    made, _secret = store.create_endpoint(
        account, EndpointInput.parse({"url": url, "events": ["order.*"]})
    )
    return store.get_endpoint_with_secrets(account, made.id).subscriber()


def secret_of(subscriber: Subscriber) -> str:
    return subscriber.secret.get_secret_value()


def call_api(
    endpoints: EndpointStore, database_url: str, broker_url: str, path: str, body: Any
) -> Response:
    """POST to the real app (its real resender) in the calling thread."""
    services = ApiServices(
        store=endpoints,
        tokens=ApiTokens((TOKEN,)),
        notices=RecordedNotices(),
        pauses=FakePauses(),
        probe=FakeProbe(),
        allow_private_networks=True,
        resender=LogResender(
            BrokerUrl.parse(broker_url), Database(DatabaseUrl.parse(database_url))
        ),
    )
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        return client.post(path, json=body, headers=AUTH)


def attempts_at(log: AttemptStore, event_id: str, endpoint_id: str) -> list[Any]:
    return [a.record for a in log.attempts_of_event(event_id, endpoint_id=endpoint_id)]


async def test_a_delivered_event_resent_arrives_as_attempt_1_with_the_same_id(
    vhost_url: str,
    database_url: str,
    endpoints: EndpointStore,
    log: AttemptStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver = await Receiver().start()
    shop = endpoint(endpoints, "acme", receiver.url)
    settings = make_settings(vhost_url, [shop]).model_copy(update={"delivery_log": True})
    base = f"/v1/accounts/acme/endpoints/{shop.id}"
    try:
        async with running_worker(settings), running_recorder(vhost_url, log):
            event_id, other_id = await asyncio.to_thread(publish_orders, vhost_url, 2)
            await receiver.wait_for(lambda got: len(got) == 2, timeout=30)
            await wait_until(
                lambda: (
                    log.event_body("acme", event_id) is not None
                    and log.event_body("acme", other_id) is not None
                ),
                30,
                "both events logged",
            )
            [first] = [r for r in receiver.requests if r.event_id == event_id]
            capsys.readouterr()

            answer = await asyncio.to_thread(
                call_api,
                endpoints,
                database_url,
                vhost_url,
                f"{base}/resend",
                {"event_id": event_id},
            )
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert (report["published"], report["not_found"], report["refused"]) == (1, 0, 0)
            assert report["events"][0]["event_id"] == event_id
            await receiver.wait_for(lambda got: len(got) == 3, timeout=30)
            again = receiver.requests[2]
            # What the receiver sees: the same event, attempt 1, signed with its secret.
            assert again.headers["X-Webhook-Attempt"] == "1"
            assert again.event_id == event_id
            assert again.body == first.body
            assert again.headers["X-Webhook-Event"] == "order.created"
            assert again.headers["Content-Type"].startswith("application/json")
            verify(secret_of(shop), again.body, again.headers["X-Webhook-Signature"])
            envelope = json.loads(again.body)
            assert set(envelope) == {"event", "data", "timestamp"}
            # The log holds the resend as an attempt 1 of its own.
            await wait_until(
                lambda: len(attempts_at(log, event_id, shop.id)) == 2, 30, "resend logged"
            )
            assert [(a.attempt, a.disposition) for a in attempts_at(log, event_id, shop.id)] == [
                (1, "delivered"),
                (1, "delivered"),
            ]
            audit = [
                line for line in capsys.readouterr().out.splitlines() if "delivery_resent" in line
            ]
            assert len(audit) == 1
            assert "actor=token:" in audit[0] and f"endpoint_id={shop.id}" in audit[0]

            # A body the log no longer holds (retention): reported, not sent; others sent.
            with log.database.transaction() as session:
                session.execute(delete(EventBodyRow).where(EventBodyRow.event_id == other_id))
            answer = await asyncio.to_thread(
                call_api,
                endpoints,
                database_url,
                vhost_url,
                f"{base}/resend",
                {"event_ids": [other_id, event_id]},
            )
            assert answer.status_code == 200, answer.text
            results = {e["event_id"]: e for e in answer.json()["events"]}
            assert results[event_id]["result"] == "published"
            assert results[other_id]["result"] == "not_found"
            assert "no longer holds its body" in results[other_id]["reason"]
            one = await asyncio.to_thread(
                call_api,
                endpoints,
                database_url,
                vhost_url,
                f"{base}/resend",
                {"event_id": other_id},
            )
            assert one.status_code == 200 and one.json()["not_found"] == 1
            await receiver.wait_for(lambda got: len(got) == 4, timeout=30)
            await asyncio.sleep(0.5)
        assert [r.event_id for r in receiver.requests].count(other_id) == 1
    finally:
        await receiver.stop()


async def test_a_dead_lettered_event_is_recovered_since_t(
    vhost_url: str,
    database_url: str,
    endpoints: EndpointStore,
    log: AttemptStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = True

    def respond(request: Received) -> web.Response:
        # o0 fails every time (dead-lettered); o2 fails once, then is delivered.
        if failing and (
            b'"o0"' in request.body or (b'"o2"' in request.body and request.attempt == 1)
        ):
            return web.Response(status=500, text="down")
        return web.json_response({"ok": True})

    receiver = await Receiver(respond).start()
    shop = endpoint(endpoints, "acme", receiver.url)
    settings = make_settings(vhost_url, [shop], delays=(0.2, 0.2))
    settings = settings.model_copy(update={"delivery_log": True})
    monkeypatch.setenv("RABBITMQ_URL", vhost_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    since = datetime.now(UTC) - timedelta(seconds=1)
    recover = ["recover", "--account", "acme", "--endpoint", shop.id, "--since", since.isoformat()]
    try:
        async with running_worker(settings), running_recorder(vhost_url, log):
            dead, fine, healed = await asyncio.to_thread(publish_orders, vhost_url, 3)
            await wait_until(
                lambda: (
                    [len(attempts_at(log, e, shop.id)) for e in (dead, fine, healed)] == [3, 1, 2]
                ),
                30,
                "every attempt logged",
            )
            assert attempts_at(log, dead, shop.id)[-1].disposition == "dead_lettered"
            assert depth(vhost_url, f"webhooks.{shop.id}.dlq") == 1
            failing = False
            before = len(receiver.requests)
            capsys.readouterr()

            code = await asyncio.to_thread(log_main, [*recover, "--format", "json"])
            printed = capsys.readouterr()
            assert code == 0, printed
            # The document (indented JSON), whatever log lines the test's set-up mixes in.
            lines = printed.out.splitlines()
            document = lines[lines.index("{") : len(lines) - lines[::-1].index("}")]
            report = json.loads("\n".join(document))
            # Its one audit line: who ran it, where, and what became of it.
            [audit] = [
                line
                for line in (printed.out + printed.err).splitlines()
                if "delivery_resent" in line
            ]
            assert "cli" in audit and shop.id in audit and "complete" in audit
            assert [e["event_id"] for e in report["events"]] == [dead]
            assert report["request"] == "recover" and report["published"] == 1
            await receiver.wait_for(lambda got: len(got) == before + 1, timeout=30)
            recovered = receiver.requests[-1]
            assert (recovered.event_id, recovered.attempt) == (dead, 1)
            verify(secret_of(shop), recovered.body, recovered.headers["X-Webhook-Signature"])
            await wait_until(
                lambda: attempts_at(log, dead, shop.id)[-1].disposition == "delivered",
                30,
                "the recovery logged as delivered",
            )
            # Delivered since its last failure: a second recover has nothing to send.
            assert await asyncio.to_thread(log_main, recover) == 0
            assert "nothing to resend" in capsys.readouterr().out
            await asyncio.sleep(0.5)
        assert [r.event_id for r in receiver.requests].count(fine) == 1
        assert [r.event_id for r in receiver.requests].count(healed) == 2
    finally:
        await receiver.stop()


async def test_another_accounts_event_is_refused_and_never_delivered(
    vhost_url: str,
    database_url: str,
    endpoints: EndpointStore,
    log: AttemptStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acme_receiver = await Receiver().start()
    globex_receiver = await Receiver().start()
    acme = endpoint(endpoints, "acme", acme_receiver.url)
    globex = endpoint(endpoints, "globex", globex_receiver.url)
    settings = make_settings(vhost_url, [acme, globex]).model_copy(update={"delivery_log": True})
    monkeypatch.setenv("RABBITMQ_URL", vhost_url)
    monkeypatch.setenv("DATABASE_URL", database_url)

    def post(path: str, body: Any) -> Response:
        return call_api(endpoints, database_url, vhost_url, path, body)

    try:
        async with running_worker(settings), running_recorder(vhost_url, log):
            [theirs] = await asyncio.to_thread(publish_orders, vhost_url, 1, account="globex")
            await globex_receiver.wait_for(lambda got: len(got) == 1, timeout=30)
            await wait_until(lambda: log.event_body("globex", theirs) is not None, 30, "logged")
            acme_path = f"/v1/accounts/acme/endpoints/{acme.id}"

            refused = await asyncio.to_thread(post, f"{acme_path}/resend", {"event_id": theirs})
            assert refused.status_code == 404
            assert "was not attempted at endpoint" in refused.json()["error"]
            # Another account's endpoint is not found at all.
            foreign = f"/v1/accounts/acme/endpoints/{globex.id}/resend"
            assert (await asyncio.to_thread(post, foreign, {"event_id": theirs})).status_code == 404
            by_filter = await asyncio.to_thread(
                post, f"{acme_path}/resend", {"event_ids": [theirs]}
            )
            assert by_filter.status_code == 200
            assert (by_filter.json()["published"], by_filter.json()["not_found"]) == (0, 1)
            since = {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
            recovered = await asyncio.to_thread(post, f"{acme_path}/recover", since)
            assert recovered.status_code == 200 and recovered.json()["events"] == []

            capsys.readouterr()
            cli = ["resend", "--account", "acme", "--endpoint", acme.id, "--event-id", theirs]
            assert await asyncio.to_thread(log_main, cli) == 1
            assert "was not attempted at endpoint" in capsys.readouterr().err
            cli = ["resend", "--account", "acme", "--endpoint", globex.id, "--event-id", theirs]
            assert await asyncio.to_thread(log_main, cli) == 1
            assert "has no endpoint" in capsys.readouterr().err
            with pytest.raises(NotFoundError):
                resend(
                    BrokerUrl.parse(vhost_url),
                    log.database,
                    ResendScope(acme.id, "acme"),
                    OneEvent(theirs),
                )
            await asyncio.sleep(1.0)
        assert acme_receiver.requests == []
        assert [r.event_id for r in globex_receiver.requests] == [theirs]
        assert depth(vhost_url, work_queue(acme.id)) == 0
    finally:
        await acme_receiver.stop()
        await globex_receiver.stop()


def test_copies_carry_what_the_worker_reads_and_a_gone_queue_is_refused(
    vhost_url: str, tmp_path: Path
) -> None:
    """No worker: the copies wait in the endpoint's queue, where their properties are read."""
    log = AttemptStore.open(f"sqlite:///{tmp_path / 'log.db'}", migrate=True)
    start = datetime.now(UTC) - timedelta(minutes=5)
    log.write(
        [record(f"e{i}", 1, start + timedelta(seconds=i)) for i in range(5)]
        + [record("lost", 1, start, endpoint_id="gone")]
    )
    shop = Subscriber.model_validate(
        {
            "id": "shop",
            "account": "acme",
            "url": "https://shop.example/hook",
            "secret": "s" * 32,
            "events": ["order.*"],
        }
    )
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    try:
        # Before any worker declared the topology: nothing can be sent (the API's 503).
        with pytest.raises(TopologyError, match=r"webhooks\.redeliver"):
            resend(
                BrokerUrl.parse(vhost_url),
                log.database,
                ResendScope("shop", "acme"),
                Matching(EventFilter(event_ids=frozenset(["e0"]))),
            )
        apply_topology(
            connection.channel(), build_topology([shop], RetryPolicy(delays_seconds=(1.0,)))
        )
        broker = BrokerUrl.parse(vhost_url)
        everything = EventFilter(since=start - timedelta(minutes=1))
        report = resend(
            broker, log.database, ResendScope("shop", "acme"), Matching(everything, limit=3)
        )
        assert [e.event_id for e in report.events] == ["e0", "e1", "e2"]
        assert report.limit_reached and report.count("published") == 3
        assert depth(vhost_url, work_queue("shop")) == 3
        channel = connection.channel()
        method, properties, body = channel.basic_get(work_queue("shop"), auto_ack=True)
        assert method is not None
        assert properties.message_id == "e0" and properties.type == "order.created"
        assert properties.headers[contract.ATTEMPT] == 1
        assert properties.headers[contract.ACCOUNT] == "acme"
        assert properties.delivery_mode == contract.PERSISTENT
        assert body == log.event_body("acme", "e0")

        gone = resend(broker, log.database, ResendScope("gone", "acme"), Matching(everything))
        assert [(e.event_id, e.result) for e in gone.events] == [("lost", "refused")]
        assert "no work queue is bound" in (gone.events[0].reason or "")
        assert gone.stopped is not None
    finally:
        connection.close()
        log.close()
