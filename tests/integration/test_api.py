"""webhook-api as a real process (``python -m cli.api``) on PostgreSQL and RabbitMQ.

Each test gets a fresh PostgreSQL database on the session's server
(``postgres_url``) and a fresh RabbitMQ vhost (``vhost_url``).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pika
import pytest
from aiohttp import web

from broker.change_notices import ChangeNotice
from broker.url import BrokerUrl
from config.topology import CONTROL_EXCHANGE, pause_marker_queue
from control.store.key import SecretsKey
from devtools.postgres_node import create_database, drop_database
from tests.support.api import AUTH, NEW_ENDPOINT
from tests.support.api_process import ROOT, ApiProcess
from tests.support.receiver import Received, Receiver
from tests.support.tcp_proxy import TcpProxy
from wire import contract
from wire.signature import verify
from worker.pause import paused_among

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    name = f"api_{secrets.token_hex(6)}"
    url = create_database(postgres_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_url, name)


def _start(tmp_path: Path, database_url: str, broker_url: str) -> ApiProcess:
    return ApiProcess(
        tmp_path / "api.log",
        DATABASE_URL=database_url,
        SECRETS_KEY=SecretsKey.generate().as_text(),
        RABBITMQ_URL=broker_url,
        # The test receiver listens on 127.0.0.1.
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
    ).start()


@pytest.fixture
def api(tmp_path: Path, database: str, vhost_url: str) -> Iterator[ApiProcess]:
    server = _start(tmp_path, database, vhost_url)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def control_queue(broker_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel with a private queue ``notices`` bound to the control exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        channel.queue_declare("notices", exclusive=True)
        channel.queue_bind("notices", CONTROL_EXCHANGE)
        yield channel
    finally:
        connection.close()


def _notices(
    channel: pika.adapters.blocking_connection.BlockingChannel, count: int, timeout: float = 15
) -> list[tuple[pika.BasicProperties, ChangeNotice]]:
    got: list[tuple[pika.BasicProperties, ChangeNotice]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        method, properties, body = channel.basic_get("notices", auto_ack=True)
        if method is None:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} notices arrived"
            time.sleep(0.05)
            continue
        got.append((properties, ChangeNotice.from_json(body)))
    return got


def test_crud_on_postgresql_announces_every_change(api: ApiProcess, vhost_url: str) -> None:
    with (
        control_queue(vhost_url) as channel,
        httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as client,
    ):
        response = client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT)
        assert response.status_code == 201, response.text
        created = response.json()
        path = f"/v1/accounts/acct_1/endpoints/{created['id']}"

        listed = client.get("/v1/accounts/acct_1/endpoints").json()
        assert [e["id"] for e in listed["data"]] == [created["id"]]
        assert created["secret"] not in str(listed)
        assert client.get("/v1/accounts/acct_2/endpoints").status_code == 404
        assert client.get(path.replace("acct_1", "acct_2")).status_code == 404

        patched = client.patch(path, json={"events": ["order.created"], "max_in_flight": 2})
        assert patched.status_code == 200, patched.text
        assert patched.json()["events"] == ["order.created"]
        assert client.get(path).json()["max_in_flight"] == 2

        assert client.delete(path).status_code == 204
        assert client.get(path).status_code == 404

        notices = _notices(channel, 3)
    assert [n.change for _, n in notices] == ["created", "updated", "deleted"]
    versions = [n.version for _, n in notices]
    assert versions[0] == created["version"] and versions == sorted(versions)
    assert {(n.account, n.endpoint_id) for _, n in notices} == {("acct_1", created["id"])}
    for properties, _ in notices:
        assert properties.delivery_mode == contract.PERSISTENT
        assert properties.content_type == contract.CONTENT_TYPE

    assert api.terminate() == 0
    log = api.log()
    assert log.count('"event":"api_audit"') == 3
    assert '"event":"api_stopped"' in log
    assert created["secret"] not in log


def test_pages_on_postgresql(api: ApiProcess) -> None:
    with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as client:
        made = [
            client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT).json()["id"]
            for _ in range(5)
        ]
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 2}
        while True:
            page = client.get("/v1/accounts/acct_1/endpoints", params=params).json()
            seen += [endpoint["id"] for endpoint in page["data"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
    assert seen == made  # oldest first, each once


def test_pause_and_resume_use_the_broker_marker(api: ApiProcess, vhost_url: str) -> None:
    broker = BrokerUrl.parse(vhost_url)
    with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as client:
        created = client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT).json()
        path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
        assert paused_among(broker, [created["id"]]) == set()

        paused = client.post(f"{path}/pause", json={"reason": "receiver migration"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        assert paused_among(broker, [created["id"]]) == {created["id"]}
        assert client.get(path).json()["paused_reason"] == "receiver migration"

        resumed = client.post(f"{path}/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        assert paused_among(broker, [created["id"]]) == set()
        assert pause_marker_queue(created["id"]).endswith(".paused")


async def test_test_delivery_reaches_a_local_receiver(api: ApiProcess) -> None:
    answers = iter([web.json_response({"received": True}), web.Response(status=410, text="gone")])
    receiver = await Receiver(respond=lambda _request: next(answers)).start()
    try:
        async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as client:
            response = await client.post(
                "/v1/accounts/acct_1/endpoints", json={**NEW_ENDPOINT, "url": receiver.url}
            )
            created = response.json()
            path = f"/v1/accounts/acct_1/endpoints/{created['id']}/test"
            passed = await client.post(path, json={"event": "order.updated"})
            failed = await client.post(path)
    finally:
        await receiver.stop()
    assert passed.status_code == 200, passed.text
    result = passed.json()
    assert result["ok"] is True and result["status"] == 200 and result["error"] is None
    assert result["latency_ms"] > 0 and '"received"' in result["response_excerpt"]
    assert failed.status_code == 200
    assert failed.json()["ok"] is False and failed.json()["status"] == 410

    first: Received = receiver.requests[0]
    assert first.headers[contract.HTTP_TEST] == "true"
    assert first.headers[contract.HTTP_EVENT] == "order.updated"
    assert verify([created["secret"]], first.body, first.headers[contract.HTTP_SIGNATURE])
    assert receiver.requests[1].headers[contract.HTTP_EVENT] == "order.created"


def test_postgresql_going_away_is_503_and_coming_back_recovers(
    tmp_path: Path, database: str, vhost_url: str
) -> None:
    parts = urlsplit(database)
    assert parts.hostname is not None and parts.port is not None
    proxy = TcpProxy(parts.hostname, parts.port).start()
    through_proxy = database.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    server = _start(tmp_path, through_proxy, vhost_url)
    try:
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=60) as client:
            created = client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT)
            assert created.status_code == 201
            path = f"/v1/accounts/acct_1/endpoints/{created.json()['id']}"

            proxy.cut()
            for response in (
                client.get(path),
                client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT),
                client.patch(path, json={"description": "x"}),
            ):
                assert response.status_code == 503
                assert response.json() == {
                    "error": "the endpoint store is unavailable; try again later"
                }
            assert client.get("/healthz").status_code == 200

            proxy.restore()
            assert client.get(path).status_code == 200
        assert server.terminate() == 0
    finally:
        server.close()
        proxy.close()
    log = server.log()
    assert '"event":"store_unavailable"' in log
    assert "Traceback" not in log
    password = parts.password
    assert password is None or password not in log


def test_an_unreachable_database_at_start_is_exit_4(tmp_path: Path) -> None:
    from devtools.local_processes import free_ports

    (dead_port,) = free_ports(1)
    env = ApiProcess(
        tmp_path / "api.log",
        DATABASE_URL=f"postgresql://api:pw-secret-1@127.0.0.1:{dead_port}/webhooks",
        SECRETS_KEY=SecretsKey.generate().as_text(),
    ).env
    done = subprocess.run(
        [sys.executable, "-m", "cli.api"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4
    assert done.stderr.startswith("webhook-api: error: database ")
    assert done.stderr.count("\n") == 1 and "pw-secret-1" not in done.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and stat[stat.rfind(")") + 2 :].split()[1] == str(pid):
            found.append(int(entry.name))
    return found


def test_api_workers_serve_one_port_from_several_processes(
    tmp_path: Path, database: str, vhost_url: str
) -> None:
    server = ApiProcess(
        tmp_path / "api.log",
        DATABASE_URL=database,
        SECRETS_KEY=SecretsKey.generate().as_text(),
        RABBITMQ_URL=vhost_url,
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        API_WORKERS="2",
    ).start()
    try:
        assert server.process is not None
        # Two server processes (and multiprocessing's resource tracker) under the supervisor.
        workers = [
            pid
            for pid in _children(server.process.pid)
            if "multiprocessing.resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        assert len(workers) == 2, server.log()[-2000:]
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=30) as client:
            made = client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT)
            assert made.status_code == 201, made.text
            for _ in range(20):  # whichever process answers, it reads the same store
                listed = client.get("/v1/accounts/acct_1/endpoints")
                assert [e["id"] for e in listed.json()["data"]] == [made.json()["id"]]
        anonymous = httpx.get(f"{server.base_url}/v1/accounts/acct_1/endpoints", timeout=30)
        assert anonymous.status_code == 401
        assert server.terminate() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert '"workers":2' in server.log() and "api_stopped" in server.log()
    finally:
        server.close()
