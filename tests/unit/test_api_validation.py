"""webhook-api input errors: 422 with ``{"error", "fields"}`` naming the fields; nothing
stored, nothing announced, and the input never echoed beyond what is needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from control.api.schemas import SampleEvent
from control.api.url_rules import check_endpoint_url
from control.store.endpoints import EndpointStore
from tests.support.api import AUTH, NEW_ENDPOINT, Api, open_store, running_api
from wire.samples import SAMPLE_EVENTS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EndpointStore]:
    store = open_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def api(store: EndpointStore) -> Iterator[Api]:
    with running_api(store) as api:
        yield api


def _refused(response: Any, fields: list[str]) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "fields"} and body["fields"] == fields
    message: str = body["error"]
    return message


@pytest.mark.parametrize(
    ("changes", "fields", "says"),
    [
        ({"url": "ftp://shop.example/hook"}, ["url"], "http:// or https://"),
        ({"url": "not a url"}, ["url"], "http"),
        ({"url": "https://user:pw@shop.example/"}, ["url"], "credentials"),
        ({"url": "https://shop.example/my hook"}, ["url"], "percent-encoded"),
        ({"url": "https://shop.example/caf\u00e9"}, ["url"], "percent-encoded"),
        ({"url": "https://shop.example/a?q=100%"}, ["url"], "percent-encoded"),
        ({"url": "https://10.1.2.3/hook"}, ["url"], "not a public IP address"),
        ({"url": "http://127.0.0.1:8080/hook"}, ["url"], "not a public IP address"),
        ({"url": "http://169.254.169.254/latest"}, ["url"], "not a public IP address"),
        ({"url": "http://[::1]/hook"}, ["url"], "not a public IP address"),
        ({"url": "http://[::ffff:192.168.0.1]/hook"}, ["url"], "not a public IP address"),
        ({"url": "http://localhost:3000/hook"}, ["url"], "this machine"),
        ({"url": "http://api.localhost/hook"}, ["url"], "this machine"),
        ({"events": ["order..created"]}, ["events"], "topic pattern"),
        ({"events": ["order.*", "order.*"]}, ["events"], "twice"),
        ({"events": []}, ["events"], "at least 1"),
        ({"retries": 3}, ["retries"], "unknown field"),
        ({"secret": "whsec_chosen"}, ["secret"], "unknown field"),
        ({"timeout_seconds": 0}, ["timeout_seconds"], "greater than 0"),
        ({"max_in_flight": 1001}, ["max_in_flight"], "1000"),
        (
            {"circuit_breaker": {"failure_threshold": 0}},
            ["circuit_breaker.failure_threshold"],
            "greater than or equal to 1",
        ),
        ({"circuit_breaker": {"nope": 1}}, ["circuit_breaker.nope"], "unknown field"),
        ({"description": "x" * 1001}, ["description"], "1000"),
    ],
)
def test_bad_endpoint_input_is_422_naming_the_field(
    api: Api, changes: dict[str, Any], fields: list[str], says: str
) -> None:
    response = api.client.post(
        "/v1/accounts/acct_1/endpoints", json={**NEW_ENDPOINT, **changes}, headers=AUTH
    )
    message = _refused(response, fields)
    assert says in message
    assert "Traceback" not in message
    assert api.store.list_endpoints("acct_1") == () and api.notices.sent == []


def test_the_same_rules_apply_to_a_patch(api: Api) -> None:
    created = api.create()
    path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"url": "https://192.168.1.1/"}, ["url"]),
        ({"url": "https://shop.example/a b"}, ["url"]),
        ({"url": None}, ["url"]),
        ({"events": ["a.#.b c"]}, ["events"]),
        ({"unknown": True}, ["unknown"]),
    ]
    for body, fields in cases:
        _refused(api.client.patch(path, json=body, headers=AUTH), fields)
    assert api.store.get_endpoint("acct_1", created["id"]).version == created["version"]
    assert len(api.notices.sent) == 1


def test_required_fields_and_bodies(api: Api) -> None:
    path = "/v1/accounts/acct_1/endpoints"
    message = _refused(api.client.post(path, json={}, headers=AUTH), ["url", "events"])
    assert "url: required" in message
    _refused(api.client.post(path, headers=AUTH), ["body"])
    bad_json = api.client.post(
        path, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert _refused(bad_json, ["body"]) == "body: is not valid JSON"
    _refused(api.client.post(path, json=["a list"], headers=AUTH), ["body"])
    not_utf8 = api.client.post(
        path, content=b"\xff\xfe.2", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert _refused(not_utf8, ["body"]) == "body: is not valid JSON"


@pytest.mark.parametrize("account", ["a.b", "has space", "x" * 65, "acct#1", "caf\u00e9"])
def test_bad_account_ids_are_422(api: Api, account: str) -> None:
    response = api.client.post(f"/v1/accounts/{account}/endpoints", json=NEW_ENDPOINT, headers=AUTH)
    if response.status_code == 404:  # '#' ends the path before the server sees it
        assert account == "acct#1"
        return
    _refused(response, ["account"])
    assert api.store.list_endpoints(account) == ()


def test_bad_endpoint_ids_and_query_parameters_are_422(api: Api) -> None:
    api.create()
    _refused(
        api.client.get("/v1/accounts/acct_1/endpoints/EP-UPPER", headers=AUTH), ["endpoint_id"]
    )
    listing = "/v1/accounts/acct_1/endpoints"
    _refused(api.client.get(f"{listing}?limit=0", headers=AUTH), ["limit"])
    _refused(api.client.get(f"{listing}?limit=1001", headers=AUTH), ["limit"])
    _refused(api.client.get(f"{listing}?limit=ten", headers=AUTH), ["limit"])
    message = _refused(api.client.get(f"{listing}?cursor=garbage", headers=AUTH), ["cursor"])
    assert "next_cursor" in message


def test_action_bodies_are_checked(api: Api) -> None:
    created = api.create()
    path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
    _refused(
        api.client.post(f"{path}/test", json={"event": "order.deleted"}, headers=AUTH), ["event"]
    )
    _refused(api.client.post(f"{path}/test", json={"extra": 1}, headers=AUTH), ["extra"])
    _refused(api.client.post(f"{path}/pause", json={"reason": "x" * 501}, headers=AUTH), ["reason"])
    _refused(
        api.client.post(
            f"{path}/secret/rotate", json={"overlap_seconds": 8 * 24 * 3600}, headers=AUTH
        ),
        ["overlap_seconds"],
    )
    assert api.probe.sent == [] and api.pauses.calls == []


def test_private_addresses_are_allowed_when_configured(store: EndpointStore) -> None:
    with running_api(store, allow_private_networks=True) as api:
        for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.5/"):
            api.create(url=url)
        # Escaping is still required: the request line would be unreadable either way.
        response = api.client.post(
            "/v1/accounts/acct_1/endpoints",
            json={**NEW_ENDPOINT, "url": "http://10.0.0.5/a b"},
            headers=AUTH,
        )
        _refused(response, ["url"])


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/webhooks",
        "https://shop.example/a%20b?x=1&y=%C3%A9",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
        "https://shop.example:8443/",
        "https://localhost.example.com/hook",
    ],
)
def test_good_urls_pass_the_api_rules(url: str) -> None:
    check_endpoint_url(url, allow_private_networks=False)


def test_the_test_route_offers_exactly_the_sample_events() -> None:
    assert get_args(SampleEvent) == SAMPLE_EVENTS
