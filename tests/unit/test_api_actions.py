"""webhook-api actions: the signed test delivery, pause and resume (broker marker and
store flag together, or neither), and the answers when a dependency is down or a bug
slips through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from config.errors import StoreUnavailableError
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from tests.support.api import AUTH, NEW_ENDPOINT, Api, broker_down, open_store, running_api
from worker.delivery import DeliveryResult


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = open_store(tmp_path)
    with running_api(store) as api:
        yield api
    store.close()


def _path(created: dict[str, str], action: str = "") -> str:
    return f"/v1/accounts/{created['account_id']}/endpoints/{created['id']}{action}"


# --- test delivery ------------------------------------------------------------------------


def test_test_delivery_uses_the_endpoint_and_its_secret(api: Api) -> None:
    created = api.create(timeout_seconds=7)
    response = api.client.post(
        _path(created, "/test"), json={"event": "order.cancelled"}, headers=AUTH
    )
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "status": 200,
        "latency_ms": 12.3,
        "response_excerpt": '{"ok":true}',
        "error": None,
    }
    ((subscriber, event),) = api.probe.sent
    assert event == "order.cancelled"
    assert subscriber.id == created["id"] and subscriber.url == created["url"]
    assert subscriber.secret.get_secret_value() == created["secret"]
    assert subscriber.timeout_seconds == 7
    assert created["secret"] not in response.text

    api.client.post(_path(created, "/test"), headers=AUTH)  # no body: order.created
    assert api.probe.sent[-1][1] == "order.created"
    assert len(api.notices.sent) == 1  # a test is not a change


def test_a_failing_receiver_is_still_200_with_ok_false(api: Api) -> None:
    created = api.create()
    api.probe.result = DeliveryResult("http_error", 500, 0.2, "HTTP 500", b"x" * 300)
    body = api.client.post(_path(created, "/test"), headers=AUTH).json()
    assert body["ok"] is False and body["status"] == 500 and body["error"] == "HTTP 500"
    assert body["response_excerpt"] == "x" * 200
    api.probe.result = DeliveryResult("connection_error", 0, 0.01, "connection refused")
    body = api.client.post(_path(created, "/test"), headers=AUTH).json()
    assert body == {
        "ok": False,
        "status": None,
        "latency_ms": 10.0,
        "response_excerpt": "",
        "error": "connection refused",
    }


# --- pause and resume ---------------------------------------------------------------------


def test_pause_sets_the_broker_marker_and_the_store_flag(api: Api) -> None:
    created = api.create()
    response = api.client.post(_path(created, "/pause"), json={"reason": "migrating"}, headers=AUTH)
    assert response.status_code == 200, response.text
    paused = response.json()
    assert paused["paused"] is True and paused["paused_reason"] == "migrating"
    assert paused["paused_at"] is not None
    assert "migrating" in api.pauses.marked[created["id"]]
    shown = api.client.get(_path(created), headers=AUTH).json()
    assert shown["paused"] is True

    resumed = api.client.post(_path(created, "/resume"), headers=AUTH).json()
    assert resumed["paused"] is False and resumed["paused_reason"] is None
    assert api.pauses.marked == {}
    assert [n.change for n in api.notices.sent] == ["created", "paused", "resumed"]


def test_pause_without_a_body_and_resume_of_a_410_pause(api: Api) -> None:
    created = api.create()
    assert api.client.post(_path(created, "/pause"), headers=AUTH).json()["paused"] is True
    api.pauses.marked.clear()
    api.pauses.marked[created["id"]] = "the worker's 410 marker"
    assert api.client.post(_path(created, "/resume"), headers=AUTH).status_code == 200
    assert api.pauses.marked == {}


@pytest.mark.parametrize("action", ["/pause", "/resume"])
def test_an_unreachable_broker_is_503_and_changes_nothing(api: Api, action: str) -> None:
    created = api.create()
    api.pauses.fail = broker_down()
    with structlog.testing.capture_logs() as logs:
        response = api.client.post(_path(created, action), headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {
        "error": "RabbitMQ is unavailable; nothing was changed, try again later"
    }
    assert "127.0.0.1" not in response.text
    assert api.store.get_endpoint("acct_1", created["id"]).version == created["version"]
    assert [n.change for n in api.notices.sent] == ["created"]
    assert not [entry for entry in logs if entry["event"] == "api_audit"]
    assert any(entry["event"] == "broker_unavailable" for entry in logs)


def test_a_store_failure_after_the_marker_takes_the_marker_back(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = api.create()

    def store_down(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailableError("database sqlite:///x is unavailable: disk I/O error")

    monkeypatch.setattr(api.store, "set_paused", store_down)
    response = api.client.post(_path(created, "/pause"), headers=AUTH)
    assert response.status_code == 503
    assert api.pauses.marked == {}  # created, then removed again
    assert [call[0] for call in api.pauses.calls] == ["mark", "clear"]

    api.pauses.marked[created["id"]] = "paused before"
    api.pauses.calls.clear()
    response = api.client.post(_path(created, "/resume"), headers=AUTH)
    assert response.status_code == 503
    assert created["id"] in api.pauses.marked  # cleared, then put back
    assert [call[0] for call in api.pauses.calls] == ["clear", "mark"]


def test_a_store_failure_leaves_a_marker_that_was_there_before(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = api.create()
    api.pauses.marked[created["id"]] = "the worker's 410 marker"

    def store_down(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailableError("database is unavailable")

    monkeypatch.setattr(api.store, "set_paused", store_down)
    assert api.client.post(_path(created, "/pause"), headers=AUTH).status_code == 503
    assert created["id"] in api.pauses.marked


# --- dependencies down, and bugs ------------------------------------------------------------


def test_an_unreachable_store_is_503_without_internals(tmp_path: Path) -> None:
    store = EndpointStore.open(
        "postgresql://api:db-password-9z@127.0.0.1:1/webhooks",
        secrets_key=SecretStr(SecretsKey.generate().as_text()),
    )
    try:
        with running_api(store) as api, structlog.testing.capture_logs() as logs:
            responses = [
                api.client.post("/v1/accounts/acct_1/endpoints", json=NEW_ENDPOINT, headers=AUTH),
                api.client.get("/v1/accounts/acct_1/endpoints", headers=AUTH),
                api.client.get("/v1/accounts/acct_1/endpoints/ep-abc", headers=AUTH),
                api.client.delete("/v1/accounts/acct_1/endpoints/ep-abc", headers=AUTH),
                api.client.post("/v1/accounts/acct_1/endpoints/ep-abc/pause", headers=AUTH),
            ]
    finally:
        store.close()
    for response in responses:
        assert response.status_code == 503
        assert response.json() == {"error": "the endpoint store is unavailable; try again later"}
    unavailable = [entry for entry in logs if entry["event"] == "store_unavailable"]
    assert len(unavailable) == len(responses)
    assert "db-password-9z" not in repr(logs)
    assert api.notices.sent == [] and api.pauses.calls == []


def test_an_unexpected_error_is_a_logged_500_with_a_generic_answer(api: Api) -> None:
    created = api.create()
    api.probe.error = RuntimeError("secret internal detail at /srv/app.py")
    with structlog.testing.capture_logs() as logs:
        response = api.client.post(_path(created, "/test"), headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "internal detail" not in response.text
    (crash,) = [entry for entry in logs if entry["event"] == "api_internal_error"]
    assert crash["log_level"] == "error" and crash["exc_info"] is True
    assert crash["path"] == _path(created, "/test")
