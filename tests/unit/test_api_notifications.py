"""PUT/GET/DELETE /v1/accounts/{account}/notifications: an account's own notification URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from control.store.endpoints import EndpointStore
from tests.support.api import AUTH, Api, open_store, running_api

URL = "/v1/accounts/acme/notifications"
TARGET = {"url": "https://ops.shop.example/notices?token=abc"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EndpointStore]:
    opened = open_store(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def api(store: EndpointStore) -> Iterator[Api]:
    with running_api(store) as running:
        yield running


def test_put_shows_the_secret_once_then_get_shows_the_url_only(
    api: Api, store: EndpointStore
) -> None:
    with structlog.testing.capture_logs() as logs:
        put = api.client.put(URL, json=TARGET, headers=AUTH)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["url"] == TARGET["url"] and body["account"] == "acme"
    assert body["secret"].startswith("whsec_")
    [audit] = [entry for entry in logs if entry["event"] == "api_audit"]
    assert audit["action"] == "set_notifications" and audit["account"] == "acme"
    assert audit["url_host"] == "ops.shop.example"
    assert "token=abc" not in json.dumps(audit, default=str)
    assert body["secret"] not in json.dumps(logs, default=str)

    got = api.client.get(URL, headers=AUTH)
    assert got.status_code == 200
    assert "secret" not in got.json() and got.json()["url"] == TARGET["url"]
    # The notifier reads it back with the secret (decrypted under the store's key).
    stored = store.notification_targets().with_secret("acme")
    assert stored is not None and stored.secret.get_secret_value() == body["secret"]
    assert body["secret"] not in repr(stored)


def test_a_given_secret_is_kept_and_another_account_sees_nothing(
    api: Api, store: EndpointStore
) -> None:
    put = api.client.put(URL, json={**TARGET, "secret": "my-own-secret-123"}, headers=AUTH)
    assert put.status_code == 200 and put.json()["secret"] == "my-own-secret-123"
    other = api.client.get("/v1/accounts/globex/notifications", headers=AUTH)
    assert other.status_code == 404
    assert store.notification_targets().with_secret("globex") is None


def test_delete_stops_the_accounts_notices(api: Api, store: EndpointStore) -> None:
    assert api.client.put(URL, json=TARGET, headers=AUTH).status_code == 200
    with structlog.testing.capture_logs() as logs:
        assert api.client.delete(URL, headers=AUTH).status_code == 204
    assert [e["action"] for e in logs if e["event"] == "api_audit"] == ["delete_notifications"]
    assert api.client.get(URL, headers=AUTH).status_code == 404
    assert api.client.delete(URL, headers=AUTH).status_code == 404
    assert store.notification_targets().with_secret("acme") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://ops.example/x"}, "url"),
        ({"url": "https://ops.example/a b"}, "url"),
        ({"url": "http://127.0.0.1/x"}, "url"),  # private networks are not allowed here
        ({"url": "https://ops.example/x", "secret": "  "}, "secret"),
        ({"url": "https://ops.example/x", "extra": 1}, "extra"),
        ({}, "url"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api: Api, body: dict[str, object], field: str) -> None:
    response = api.client.put(URL, json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in response.json()["fields"]


def test_every_route_needs_a_token(api: Api) -> None:
    for method in ("get", "put", "delete"):
        response = api.client.request(method, URL, json=TARGET)
        assert response.status_code == 401


def test_a_bad_account_id_is_a_422(api: Api) -> None:
    response = api.client.get("/v1/accounts/no%20spaces/notifications", headers=AUTH)
    assert response.status_code == 422
