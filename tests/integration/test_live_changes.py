"""A running worker follows endpoint changes without a restart.

The same test bodies run against the subscriber file (edited on disk) and the
endpoint store on SQLite and PostgreSQL (written, then announced with a change
notice on ``webhooks.control``, as the control API does).  Every change is
checked on the broker itself: consumers on the work queue, bindings by a
``mandatory`` publish that comes back unroutable once they are gone.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from broker.url import BrokerUrl
from config.errors import UnroutableError
from config.topology import work_queue
from devtools.postgres_node import create_database, drop_database
from producer import Publisher
from tests.support.amqp import channel, depth
from tests.support.live_config import FileEndpoints, StoreEndpoints
from tests.support.receiver import Received, Receiver
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker_harness import make_settings, running_worker, wait_until, worker_status
from wire.samples import sample_data
from wire.signature import verify
from worker.service import Worker

pytestmark = pytest.mark.integration

Endpoints = FileEndpoints | StoreEndpoints
# The account of the endpoints a test adds; the bystander belongs to "acme", so
# an event of this account routes only to the endpoints under test.
ACCOUNT = "globex"
# How soon a change must show: the goal is within 2 s of the notice, the bound
# is generous for a shared, busy machine.
BOUND = 5.0
_SOURCES = ["file", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
_STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def _source(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, url: str
) -> Iterator[Endpoints]:
    """Endpoints in the subscriber file, or in a store on an empty SQLite or PostgreSQL."""
    if kind == "file":
        yield FileEndpoints(tmp_path / "subscribers.yaml", url)
        return
    if kind == "sqlite":
        sqlite = StoreEndpoints(f"sqlite:///{tmp_path / 'store.db'}", url, kind=kind)
        yield sqlite
        sqlite.close()
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"live_{secrets.token_hex(6)}"
    postgres = StoreEndpoints(create_database(server, name), url, kind=kind)
    try:
        yield postgres
    finally:
        postgres.close()
        drop_database(server, name)


@pytest.fixture
def endpoints(
    request: pytest.FixtureRequest, tmp_path: Path, vhost_url: str
) -> Iterator[Endpoints]:
    """The source the test's parameter names (always given indirectly)."""
    with _source(request.param, request, tmp_path, vhost_url) as source:
        yield source


@pytest.fixture(params=_STORES)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, vhost_url: str
) -> Iterator[StoreEndpoints]:
    with _source(request.param, request, tmp_path, vhost_url) as source:
        assert isinstance(source, StoreEndpoints)
        yield source


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


@asynccontextmanager
async def live_worker(
    endpoints: Endpoints,
    url: str,
    receiver: Receiver,
    *,
    reconcile_seconds: float = 30.0,
    database_url: str | None = None,
) -> AsyncIterator[Worker]:
    """A worker on ``endpoints`` with one endpoint already there (the bystander, of acme)."""
    await endpoints.create(f"{receiver.url}/bystander", account="acme")
    base = make_settings(url, [])
    if isinstance(endpoints, StoreEndpoints):
        settings = endpoints.settings(
            base, reconcile_seconds=reconcile_seconds, database_url=database_url
        )
    else:
        settings = endpoints.settings(base, reconcile_seconds=reconcile_seconds)
    async with running_worker(settings) as worker:
        yield worker


async def changed(endpoints: Endpoints, worker: Worker) -> float:
    """Announce the last change and wait until the worker applied it; the seconds it took."""
    started = time.monotonic()
    await endpoints.announce()
    await wait_until(lambda: endpoints.applied(worker), BOUND, "the change applied", 0.02)
    return time.monotonic() - started


def publish(url: str, event_type: str = "order.created", count: int = 1, prefix: str = "e") -> None:
    """Publish ``count`` events of ACCOUNT (``mandatory``: UnroutableError if nothing is bound)."""
    data = sample_data(event_type)
    with Publisher(BrokerUrl.parse(url)) as publisher:
        for i in range(count):
            publisher.publish(event_type, {**data, "id": f"{prefix}{i}"}, account=ACCOUNT)


def publish_until_routed(url: str, timeout: float) -> None:
    """Publish one order.created of ACCOUNT as soon as a queue is bound for it."""
    deadline = time.monotonic() + timeout
    with Publisher(BrokerUrl.parse(url)) as publisher:
        while True:
            try:
                publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
                return
            except UnroutableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def consumers(url: str, queue: str) -> int:
    with channel(url) as ch:
        return int(ch.queue_declare(queue, passive=True).method.consumer_count)


def _lane(worker: Worker, endpoint_id: str) -> dict[str, Any] | None:
    found = [s for s in worker.status()["subscribers"] if s["id"] == endpoint_id]
    return found[0] if found else None


def at(receiver: Receiver, path: str) -> list[Received]:
    """The requests one endpoint got (its URL is the receiver's plus ``path``)."""
    return [r for r in receiver.requests if r.path == f"/webhook{path}"]


# ------------------------------------------------------------------------ adding


@pytest.mark.parametrize("endpoints", _SOURCES, indirect=True)
async def test_a_new_endpoint_is_consumed_within_seconds_of_the_change(
    endpoints: Endpoints, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        with structlog.testing.capture_logs() as logs:
            endpoint_id, _ = await endpoints.create(f"{receiver.url}/new", account=ACCOUNT)
            started = time.monotonic()
            await endpoints.announce()
            # Events published before its queue is bound are unroutable: publish the
            # first one the moment the worker has bound it.
            await asyncio.to_thread(publish_until_routed, vhost_url, BOUND)
            await receiver.wait_for(lambda rs: bool(at(receiver, "/new")), BOUND)
            await wait_until(lambda: endpoints.applied(worker), BOUND, "the pass finished")
        first = at(receiver, "/new")[0].at - started
        lane = _lane(worker, endpoint_id)
        assert lane is not None and lane["consuming"] and lane["config_state"] == "enabled"
        assert await asyncio.to_thread(consumers, vhost_url, work_queue(endpoint_id)) == 1
    print(f"\n{endpoints.kind}: change to first delivery {first * 1000:.0f} ms")
    assert first < BOUND
    [added] = [e for e in logs if e["event"] == "endpoint_added"]
    assert added["subscriber"] == endpoint_id and added["account"] == ACCOUNT
    assert added["host"] == "127.0.0.1" and "url" not in added
    assert any(e["event"] == "reconciled" and e["added"] == 1 for e in logs)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_a_reconnect_declares_the_endpoints_added_since_start(
    store: StoreEndpoints, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(store, vhost_url, receiver) as worker:
        endpoint_id, _ = await store.create(f"{receiver.url}/new", account=ACCOUNT)
        await changed(store, worker)
        with structlog.testing.capture_logs() as logs:
            # Deleting the queue cancels the consumer: the worker reconnects and must
            # declare the endpoint it added live, not only the start-up ones.
            with channel(vhost_url) as ch:
                ch.queue_delete(work_queue(endpoint_id))
            await wait_until(
                lambda: any(e["event"] == "consuming" for e in logs), 20, "consuming again"
            )
        assert any(e["event"] == "consumer_cancelled_by_broker" for e in logs)
        await asyncio.to_thread(publish, vhost_url)
        await receiver.wait_for(lambda rs: bool(at(receiver, "/new")), BOUND)


# ---------------------------------------------------------------------- changing


@pytest.mark.parametrize("endpoints", _SOURCES, indirect=True)
async def test_changed_patterns_bind_the_new_and_unbind_the_removed(
    endpoints: Endpoints, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        endpoint_id, _ = await endpoints.create(
            f"{receiver.url}/ep", account=ACCOUNT, events=("order.created",)
        )
        await changed(endpoints, worker)
        await asyncio.to_thread(publish, vhost_url, "order.created")
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 1, BOUND)

        with structlog.testing.capture_logs() as logs:
            await endpoints.update(endpoint_id, events=("order.cancelled",))
            await changed(endpoints, worker)
        # The removed pattern is unbound on the broker: nothing routes it any more.
        with pytest.raises(UnroutableError):
            await asyncio.to_thread(publish, vhost_url, "order.created")
        await asyncio.to_thread(publish, vhost_url, "order.cancelled")
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 2, BOUND)
    assert [r.headers["X-Webhook-Event"] for r in at(receiver, "/ep")] == [
        "order.created",
        "order.cancelled",
    ]
    [bindings] = [e for e in logs if e["event"] == "bindings_changed"]
    assert bindings["added"] == [f"{ACCOUNT}.order.cancelled"]
    assert bindings["removed"] == [f"{ACCOUNT}.order.created"]
    [change] = [e for e in logs if e["event"] == "endpoint_changed"]
    assert change["fields"] == ["events"]


@pytest.mark.parametrize("endpoints", _SOURCES, indirect=True)
async def test_a_new_secret_signs_from_the_next_attempt(
    endpoints: Endpoints, vhost_url: str, receiver: Receiver
) -> None:
    current: list[str] = []

    def check(request: Received) -> web.Response:
        try:
            verify(current[-1], request.body, request.headers["X-Webhook-Signature"])
        except Exception:
            return web.Response(status=401)
        return web.json_response({"ok": True})

    receiver.respond = check
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        endpoint_id, secret = await endpoints.create(f"{receiver.url}/ep", account=ACCOUNT)
        current.append(secret)
        await changed(endpoints, worker)
        await asyncio.to_thread(publish, vhost_url, prefix="before")
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 1, BOUND)

        with structlog.testing.capture_logs() as logs:
            current.append(await endpoints.rotate(endpoint_id))
            await changed(endpoints, worker)
        await asyncio.to_thread(publish, vhost_url, prefix="after")
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 2, BOUND)
    before, after = at(receiver, "/ep")
    assert (before.attempt, after.attempt) == (1, 1)  # both accepted at once
    verify(current[0], before.body, before.headers["X-Webhook-Signature"])
    verify(current[1], after.body, after.headers["X-Webhook-Signature"])
    [change] = [e for e in logs if e["event"] == "endpoint_changed"]
    assert change["fields"] == ["secret"]
    assert not [e for e in logs if e["event"] == "bindings_changed"]
    assert all(current[1] not in repr(e) and current[0] not in repr(e) for e in logs)


@pytest.mark.parametrize("endpoints", ["file", "sqlite"], indirect=True)
async def test_a_new_max_in_flight_reapplies_the_prefetch(
    endpoints: Endpoints, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        endpoint_id, _ = await endpoints.create(
            f"{receiver.url}/ep", account=ACCOUNT, max_in_flight=4
        )
        await changed(endpoints, worker)
        assert (_lane(worker, endpoint_id) or {})["prefetch"] == 4
        with structlog.testing.capture_logs() as logs:
            await endpoints.update(endpoint_id, max_in_flight=2, timeout_seconds=3)
            await changed(endpoints, worker)
        lane = _lane(worker, endpoint_id)
        assert lane is not None and lane["prefetch"] == 2 and lane["consuming"]
        assert await asyncio.to_thread(consumers, vhost_url, work_queue(endpoint_id)) == 1
        await asyncio.to_thread(publish, vhost_url, count=2)
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 2, BOUND)
    [change] = [e for e in logs if e["event"] == "endpoint_changed"]
    assert change["fields"] == ["timeout_seconds", "max_in_flight"]


@pytest.mark.parametrize(
    ("endpoints", "how"),
    [
        ("file", "disable"),
        ("sqlite", "disable"),
        ("sqlite", "pause"),
        pytest.param("postgresql", "disable", marks=pytest.mark.postgres),
        pytest.param("postgresql", "pause", marks=pytest.mark.postgres),
    ],
    indirect=["endpoints"],
)
async def test_disabled_or_paused_stops_consuming_and_events_wait(
    endpoints: Endpoints, how: str, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        endpoint_id, _ = await endpoints.create(f"{receiver.url}/ep", account=ACCOUNT)
        await changed(endpoints, worker)
        queue = work_queue(endpoint_id)
        assert await asyncio.to_thread(consumers, vhost_url, queue) == 1

        if how == "disable":
            await endpoints.set_enabled(endpoint_id, False)
        else:
            await endpoints.set_paused(endpoint_id, True)
        await changed(endpoints, worker)
        assert await asyncio.to_thread(consumers, vhost_url, queue) == 0
        lane = _lane(worker, endpoint_id)
        assert lane is not None and not lane["consuming"]
        assert lane["config_state"] == ("disabled" if how == "disable" else "paused")
        await asyncio.to_thread(publish, vhost_url, count=3)
        await asyncio.sleep(1)
        assert not at(receiver, "/ep")
        assert await asyncio.to_thread(depth, vhost_url, queue) == 3

        if how == "disable":
            await endpoints.set_enabled(endpoint_id, True)
        else:
            await endpoints.set_paused(endpoint_id, False)
        await changed(endpoints, worker)
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 3, BOUND)
        assert await asyncio.to_thread(consumers, vhost_url, queue) == 1


# ---------------------------------------------------------------------- deleting


@pytest.mark.parametrize("endpoints", _SOURCES, indirect=True)
async def test_a_deleted_endpoint_stops_keeps_its_queue_and_is_reported(
    endpoints: Endpoints, vhost_url: str, receiver: Receiver
) -> None:
    async def slowly(_request: Received) -> web.Response:
        await asyncio.sleep(0.5)
        return web.json_response({"ok": True})

    receiver.respond = slowly
    async with live_worker(endpoints, vhost_url, receiver) as worker:
        endpoint_id, _ = await endpoints.create(
            f"{receiver.url}/ep", account=ACCOUNT, max_in_flight=1
        )
        await changed(endpoints, worker)
        await asyncio.to_thread(publish, vhost_url, count=12)
        await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) >= 1, BOUND)

        with structlog.testing.capture_logs() as logs:
            await endpoints.delete(endpoint_id)
            await changed(endpoints, worker)
            queue = work_queue(endpoint_id)
            seen = len(at(receiver, "/ep"))
            # A quorum queue lists a cancelled consumer until its unacked message
            # is settled: the one in flight finishes, no other starts.
            await wait_until(lambda: consumers(vhost_url, queue) == 0, 2, "consumer gone")
            await asyncio.sleep(1)
            assert len(at(receiver, "/ep")) <= seen + 1
            # Its bindings are gone: new events of its pattern route nowhere.
            with pytest.raises(UnroutableError):
                await asyncio.to_thread(publish, vhost_url)
            left = await asyncio.to_thread(depth, vhost_url, queue)
            status = await asyncio.to_thread(worker_status, worker)
    assert left >= 3 and left + len(at(receiver, "/ep")) == 12
    assert status["removed_subscribers_with_queues"] == [
        {"id": endpoint_id, "queue": queue, "messages": left}
    ]
    assert endpoint_id not in [s["id"] for s in status["subscribers"]]
    [warning] = [e for e in logs if e["event"] == "removed_subscriber_has_queue"]
    assert warning["subscriber"] == endpoint_id and warning["messages"] == left
    [removed] = [e for e in logs if e["event"] == "endpoint_removed"]
    assert removed["queue"] == queue
    [bindings] = [e for e in logs if e["event"] == "bindings_changed"]
    assert bindings["removed"] == [f"{ACCOUNT}.order.*"] and bindings["added"] == []


# --------------------------------------------------------------------- healing


async def test_a_lost_notice_heals_by_the_periodic_reconciliation(
    store: StoreEndpoints, vhost_url: str, receiver: Receiver
) -> None:
    async with live_worker(store, vhost_url, receiver, reconcile_seconds=0.5) as worker:
        await store.create(f"{receiver.url}/ep", account=ACCOUNT)
        started = time.monotonic()  # and no notice at all
        await wait_until(lambda: store.applied(worker), BOUND, "the periodic pass", 0.02)
        await asyncio.to_thread(publish, vhost_url)
        await receiver.wait_for(lambda rs: bool(at(receiver, "/ep")), BOUND)
    print(f"\n{store.kind}: applied without a notice after {time.monotonic() - started:.2f} s")


@pytest.mark.postgres
async def test_deliveries_go_on_while_the_store_is_down_and_it_recovers(
    vhost_url: str, receiver: Receiver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with _source("postgresql", request, tmp_path, vhost_url) as source:
        assert isinstance(source, StoreEndpoints)
        await _store_outage(source, vhost_url, receiver)


async def _store_outage(store: StoreEndpoints, vhost_url: str, receiver: Receiver) -> None:
    host_port = store.database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    through_proxy = store.database_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    try:
        async with live_worker(
            store, vhost_url, receiver, reconcile_seconds=0.3, database_url=through_proxy
        ) as worker:
            known, _ = await store.create(f"{receiver.url}/known", account=ACCOUNT)
            await changed(store, worker)
            with structlog.testing.capture_logs() as logs:
                proxy.cut()  # the worker's database is gone from here on
                await wait_until(
                    lambda: any(e["event"] == "store_unavailable" for e in logs), BOUND, "noticed"
                )
                # Written to the real database: the worker cannot see it yet.
                await store.create(f"{receiver.url}/later", account="initech")
                await store.announce()
                await asyncio.to_thread(publish, vhost_url, count=3)
                await receiver.wait_for(lambda rs: len(at(receiver, "/known")) == 3, BOUND)
                await asyncio.sleep(1)  # several failed passes: still one error line
                assert not store.applied(worker)
                assert worker.is_ready()

                proxy.restore()
                await wait_until(lambda: store.applied(worker), 15, "recovered")
            assert _lane(worker, known) is not None
    finally:
        proxy.close()
    assert [e["event"] for e in logs].count("store_unavailable") == 1
    assert [e["event"] for e in logs].count("store_available") == 1
    assert any(e["event"] == "endpoint_added" and e["account"] == "initech" for e in logs)


# ----------------------------------------------------------------- the file only


async def test_an_invalid_file_edit_keeps_the_last_good_set(
    vhost_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    file = FileEndpoints(tmp_path / "subscribers.yaml", vhost_url)
    async with live_worker(file, vhost_url, receiver, reconcile_seconds=0.3) as worker:
        endpoint_id, _ = await file.create(f"{receiver.url}/ep", account=ACCOUNT)
        await changed(file, worker)
        good = worker.reconciler.version
        with structlog.testing.capture_logs() as logs:
            await file.write_text("subscribers:\n  - id: Not Valid\n    url: ftp://x\n")
            await asyncio.sleep(1.5)  # five polls
            await asyncio.to_thread(publish, vhost_url)
            await receiver.wait_for(lambda rs: len(at(receiver, "/ep")) == 1, BOUND)
            assert worker.reconciler.version == good
            assert _lane(worker, endpoint_id) is not None

            added, _ = await file.create(f"{receiver.url}/added", account="initech")
            await changed(file, worker)
    invalid = [e for e in logs if e["event"] == "subscriber_file_invalid"]
    assert len(invalid) == 1 and "subscribers[0]" in invalid[0]["error"]
    assert invalid[0]["keeping_version"] == good
    assert any(e["event"] == "endpoint_added" and e["subscriber"] == added for e in logs)
    assert not any(e["event"] == "endpoint_removed" for e in logs)
