"""``webhook-worker check-config`` and ``test-endpoint`` (no broker involved)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from cli.worker import main
from tests.support.receiver import Received, Receiver
from wire.signature import verify

SECRET = "cli-test-secret-value"


def _config(tmp_path: Path, url: str, *, private: bool = True) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "subscribers:\n"
        f"  - id: shop-a\n    url: {url}\n    secret: ${{SHOP_SECRET}}\n"
        '    account: acme\n    events: ["order.*"]\n'
        "retry:\n  delays_seconds: [1, 2]\n"
        f"security:\n  allow_private_networks: {'true' if private else 'false'}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SHOP_SECRET", SECRET)
    monkeypatch.setenv("RABBITMQ_URL", "amqp://user:hunter2-pw@127.0.0.1:1/%2F")
    return tmp_path


def test_check_config_prints_the_table_without_secrets(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, "https://shop.example/hook")))
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "shop-a" in out and "webhooks.shop-a.work / webhooks.shop-a.dlq" in out
    assert "1 subscriber(s) OK" in out
    assert SECRET not in out and "hunter2-pw" not in out


def test_check_config_names_the_mistake(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, "ftp://shop.example/hook")))
    assert main(["check-config"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("webhook-worker: error: ")
    assert "subscribers[0] (id 'shop-a').url: must start with http:// or https://" in err


async def test_test_endpoint_sends_one_signed_sample(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = await Receiver().start()
    try:
        monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, receiver.url)))
        code = await asyncio.to_thread(
            main, ["test-endpoint", "shop-a", "--event", "order.updated"]
        )
    finally:
        await receiver.stop()
    assert code == 0
    [request] = receiver.requests
    assert request.headers["X-Webhook-Test"] == "true"
    assert request.headers["X-Webhook-Event"] == "order.updated"
    verify(SECRET, request.body, request.headers["X-Webhook-Signature"])
    assert json.loads(request.body)["data"]["status"] == "shipped"
    out = capsys.readouterr().out
    assert "status:     200" in out and "result:     PASS" in out


async def test_test_endpoint_fails_on_non_2xx_and_refused_private_address(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(_r: Received) -> web.Response:
        return web.Response(status=401, text='{"error": "Invalid signature"}')

    receiver = await Receiver(refuse).start()
    try:
        monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, receiver.url)))
        assert await asyncio.to_thread(main, ["test-endpoint", "shop-a"]) == 1
        assert "Invalid signature" in capsys.readouterr().out
        monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, receiver.url, private=False)))
        assert await asyncio.to_thread(main, ["test-endpoint", "shop-a"]) == 1
        assert "not a public address" in capsys.readouterr().out
    finally:
        await receiver.stop()
    assert len(receiver.requests) == 1  # the refused private address was never contacted


def test_test_endpoint_unknown_subscriber(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_CONFIG", str(_config(env, "https://shop.example/hook")))
    assert main(["test-endpoint", "nope"]) == 2
    assert "no subscriber 'nope'" in capsys.readouterr().err


def test_check_config_reports_every_mistake_one_per_line_in_plain_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "subscribers:\n"
        "  - id: a\n    account: acme\n    url: ftp://a.example/\n    secret: ${NOPE_A}\n"
        "    events: []\n    timeout_seconds: -1\n    max_in_flight: lots\n"
        "  - id: b\n    url: https://b.example/\n    secret: s\n    events: [x]\n    colour: red\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("WEBHOOK_CONFIG", str(path))
    monkeypatch.delenv("NOPE_A", raising=False)
    assert main(["check-config"]) == 3
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith(f"webhook-worker: error: {path}: ") for line in lines)
    text = "\n".join(lines)
    for expected in (
        "subscribers[0] (id 'a').secret: environment variable NOPE_A is not set",
        "subscribers[0] (id 'a').url: must start with http:// or https://",
        "subscribers[0] (id 'a').events: must not be empty",
        "subscribers[0] (id 'a').timeout_seconds: must be more than 0",
        "subscribers[0] (id 'a').max_in_flight: must be a whole number",
        "subscribers[1] (id 'b').colour: unknown key",
    ):
        assert expected in text, text
    assert len(lines) == 6, text
    assert "Input should" not in text and "Tuple should" not in text


def test_check_config_warns_about_a_target_the_worker_will_refuse(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(env, "http://127.0.0.1:9/hook", private=False)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(config))
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert "1 subscriber(s) OK, 1 warning(s)" in out
    assert "webhook-worker: warning: shop-a: 127.0.0.1 is a private address" in err


# --- with the endpoint store (DATABASE_URL): no subscriber file needed ----------


def _store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> tuple[str, str]:
    """A SQLite store with one endpoint (and one disabled); returns (endpoint id, secret)."""
    from pydantic import SecretStr

    from control.store.endpoints import EndpointStore
    from control.store.key import SecretsKey
    from tests.support.store import sample_input

    database = f"sqlite:///{tmp_path / 'store.db'}"
    key = SecretsKey.generate().as_text()
    store = EndpointStore.open(database, secrets_key=SecretStr(key), migrate=True)
    try:
        endpoint, secret = store.create_endpoint("acme", sample_input(url=url))
        store.create_endpoint("acme", sample_input(enabled=False))
    finally:
        store.close()
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("SECRETS_KEY", key)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.setenv("WEBHOOK_CONFIG", str(tmp_path / "absent.yaml"))
    return endpoint.id, secret.get_secret_value()


async def test_with_the_store_check_config_and_test_endpoint_read_the_store(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = await Receiver().start()
    try:
        endpoint_id, secret = _store_env(monkeypatch, env, receiver.url)
        assert await asyncio.to_thread(main, ["check-config"]) == 0
        out = capsys.readouterr().out
        assert "config: endpoint store sqlite:///" in out and "(DATABASE_URL)" in out
        assert endpoint_id in out and "(disabled)" in out and "2 subscriber(s) OK" in out
        assert secret not in out
        assert await asyncio.to_thread(main, ["test-endpoint", endpoint_id]) == 0
        assert await asyncio.to_thread(main, ["test-endpoint", "ep-nope"]) == 2
        assert "no subscriber 'ep-nope' in endpoint store" in capsys.readouterr().err
    finally:
        await receiver.stop()
    [request] = receiver.requests
    verify(secret, request.body, request.headers["X-Webhook-Signature"])
