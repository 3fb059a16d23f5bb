"""Each merchant's events reach that merchant's endpoints only: on the first attempt,
through retries, into dead-letter queues and back out by replay.

Twelve accounts with two endpoints each and one explicit all-accounts sink share
one broker and one worker.  Every event names its account inside its data (the
test's own marker, ``sourceName``), so a receiver can tell whose event it got.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import pytest
from aiohttp import web

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.subscribers import CircuitBreakerPolicy
from config.topology import EVENTS_EXCHANGE, dead_letter_queue, event_routing_key, work_queue
from control.dead_letters.reader import list_dead_letters
from control.dead_letters.replay import replay
from producer import Publisher
from tests.support.amqp import channel, depth
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import make_settings, running_worker, subscriber, wait_until
from wire.samples import sample_data

pytestmark = pytest.mark.integration

ACCOUNTS = [f"merchant-{n:02d}" for n in range(12)]
EVENTS_PER_ACCOUNT = 6  # two of each order event type
SINK = "audit-sink"


def _endpoint_ids(account: str) -> tuple[str, str]:
    """Every account has a catch-all endpoint and one for cancellations only."""
    return f"{account}-all", f"{account}-cancel"


def _owner(endpoint: str) -> str | None:
    return None if endpoint == SINK else endpoint.rsplit("-", 1)[0]


def _subscribers(url: str) -> list[Any]:
    subs = []
    for account in ACCOUNTS:
        every, cancels = _endpoint_ids(account)
        subs.append(subscriber(every, f"{url}/{every}", account=account, events=("order.*",)))
        subs.append(
            subscriber(cancels, f"{url}/{cancels}", account=account, events=("order.cancelled",))
        )
    subs.append(subscriber(SINK, f"{url}/{SINK}", account=None, all_accounts=True, events=("#",)))
    return subs


def _events(account: str) -> list[tuple[str, str, dict[str, Any], str]]:
    out = []
    for i in range(EVENTS_PER_ACCOUNT):
        event_type = ("order.created", "order.updated", "order.cancelled")[i % 3]
        data = {**sample_data(event_type), "id": f"{account}-{i}", "sourceName": account}
        out.append((account, event_type, data, f"evt_{account}_{i}"))
    return out


def _seen(receiver: Receiver) -> dict[str, list[tuple[str, str, str]]]:
    """Per endpoint: (account named in the body, event id, event type) of each 2xx'd request."""
    by_endpoint: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for request in receiver.requests:
        body = json.loads(request.body)
        by_endpoint[request.path.strip("/")].append(
            (body["data"]["sourceName"], request.event_id, body["event"])
        )
    return by_endpoint


async def test_no_event_crosses_accounts_through_retries_dead_letters_and_replay(
    vhost_url: str,
) -> None:
    # merchant-00's endpoints fail every attempt until "repaired"; merchant-01's
    # fail each event's first attempt only.  Everyone else answers 2xx.
    state = {"repaired": False}
    first_attempts_failed: set[tuple[str, str]] = set()

    def respond(request: Received) -> web.Response:
        endpoint = request.path.strip("/")
        if endpoint.startswith("merchant-00-") and not state["repaired"]:
            return web.Response(status=503)
        key = (endpoint, request.event_id)
        if endpoint.startswith("merchant-01-") and key not in first_attempts_failed:
            first_attempts_failed.add(key)
            return web.Response(status=500)
        return web.json_response({"received": True})

    receiver = await Receiver(respond=respond).start()
    base = f"http://127.0.0.1:{receiver.port}"
    subs = _subscribers(base)
    # The breaker would pause merchant-00's endpoints; this test wants their dead letters.
    settings = make_settings(vhost_url, subs, delays=(0.2, 0.2)).model_copy(
        update={"circuit_breaker": CircuitBreakerPolicy(enabled=False)}
    )
    await asyncio.to_thread(declare_topology, settings.broker, settings.subscribers, settings.retry)
    events = [event for account in ACCOUNTS for event in _events(account)]
    cancellations = sum(1 for e in events if e[1] == "order.cancelled")
    try:
        async with running_worker(settings):

            def publish() -> list[str]:
                with Publisher(BrokerUrl.parse(vhost_url)) as publisher:
                    return publisher.publish_many(events)

            await asyncio.to_thread(publish)
            dead_queues = [dead_letter_queue(e) for e in _endpoint_ids("merchant-00")]

            def all_settled() -> bool:
                ok_paths = {r.path for r in receiver.requests}
                dead = sum(depth(vhost_url, q) for q in dead_queues)
                sink = sum(1 for r in receiver.requests if r.path == f"/{SINK}")
                return dead == EVENTS_PER_ACCOUNT + 2 and sink >= len(events) and bool(ok_paths)

            await wait_until(all_settled, timeout=60, what="deliveries and dead letters")

            # The dead letters of merchant-00 are that account's events only.
            letters = await asyncio.to_thread(
                list_dead_letters, settings.broker, list(_endpoint_ids("merchant-00"))
            )
            assert len(letters) == EVENTS_PER_ACCOUNT + 2
            assert {letter.account for letter in letters} == {"merchant-00"}

            # Replay returns each dead letter to its own endpoint only.
            state["repaired"] = True
            result = await asyncio.to_thread(
                replay, settings.broker, list(_endpoint_ids("merchant-00"))
            )
            assert len(result.moved) == EVENTS_PER_ACCOUNT + 2 and not result.failed

            def replayed() -> bool:
                good = [
                    r
                    for r in receiver.requests
                    if r.path.startswith("/merchant-00-")
                    and r.headers["X-Webhook-Attempt"] == "1"
                    and "X-Webhook-Test" not in r.headers
                ]
                return len({(r.path, r.event_id) for r in good}) == EVENTS_PER_ACCOUNT + 2 and all(
                    depth(vhost_url, q) == 0 for q in dead_queues
                )

            await wait_until(replayed, timeout=30, what="replayed dead letters delivered")
    finally:
        await receiver.stop()

    seen = _seen(receiver)
    crossings = [
        (endpoint, account, event_id)
        for endpoint, got in seen.items()
        for account, event_id, _type in got
        if _owner(endpoint) is not None and account != _owner(endpoint)
    ]
    assert crossings == []
    for account in ACCOUNTS:
        every, cancels = _endpoint_ids(account)
        own = [e for e in events if e[0] == account]
        assert {i for _a, i, _t in seen[every]} == {e[3] for e in own}
        assert {i for _a, i, _t in seen[cancels]} == {
            e[3] for e in own if e[1] == "order.cancelled"
        }
        assert {t for _a, _i, t in seen[cancels]} == {"order.cancelled"}
    # The explicit all-accounts sink got every account's events.
    assert {i for _a, i, _t in seen[SINK]} == {e[3] for e in events}
    assert cancellations == len(ACCOUNTS) * 2


async def test_a_misbound_queue_never_delivers_another_accounts_event(vhost_url: str) -> None:
    """Defence in depth: even if a work queue were bound to another account's key by
    hand, the worker refuses that event and dead-letters it as ``wrong_account``."""
    receiver = await Receiver().start()
    mine = subscriber("mine", receiver.url, account="merchant-a")
    settings = make_settings(vhost_url, [mine], delays=(0.2, 0.2))
    await asyncio.to_thread(declare_topology, settings.broker, settings.subscribers, settings.retry)

    def misbind() -> None:
        with channel(vhost_url) as ch:
            ch.queue_bind(
                work_queue("mine"), EVENTS_EXCHANGE, event_routing_key("merchant-b", "order.*")
            )

    await asyncio.to_thread(misbind)
    try:
        async with running_worker(settings):

            def publish() -> None:
                with Publisher(BrokerUrl.parse(vhost_url)) as publisher:
                    data = sample_data("order.created")
                    publisher.publish("order.created", data, account="merchant-b")
                    publisher.publish("order.created", data, account="merchant-a")

            await asyncio.to_thread(publish)
            await receiver.wait_for(lambda rs: len(rs) >= 1, timeout=15)
            await wait_until(
                lambda: depth(vhost_url, dead_letter_queue("mine")) == 1,
                timeout=15,
                what="the misrouted event dead-lettered",
            )
            letters = await asyncio.to_thread(list_dead_letters, settings.broker, ["mine"])
        [letter] = letters
        assert letter.reason is not None and letter.reason.startswith("wrong_account")
        assert letter.account == "merchant-b"
        assert len(receiver.requests) == 1  # only merchant-a's own event was delivered
    finally:
        await receiver.stop()
