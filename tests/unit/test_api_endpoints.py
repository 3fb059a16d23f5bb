"""webhook-api endpoints on SQLite: create, list (pages), show, change, delete; accounts
see only their own; secrets only in the create and rotate answers; one audit line and
one change notice per change."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from config.logs import configure_logging
from control.store.endpoints import EndpointStore
from tests.support.api import AUTH, Api, open_store, running_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = open_store(tmp_path)
    with running_api(store) as api:
        yield api
    store.close()


def _audit(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "api_audit"]


def test_create_answers_the_endpoint_and_its_secret_once(api: Api) -> None:
    created = api.create(max_in_flight=4, circuit_breaker={"failure_threshold": 3})
    assert created["id"].startswith("ep-") and created["account_id"] == "acct_1"
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["order.*"] and created["max_in_flight"] == 4
    assert created["circuit_breaker"]["failure_threshold"] == 3
    assert created["version"] >= 1 and created["paused"] is False
    stored = api.store.get_endpoint_with_secrets("acct_1", created["id"])
    assert stored.secret.get_secret_value() == created["secret"]

    shown = api.client.get(f"/v1/accounts/acct_1/endpoints/{created['id']}", headers=AUTH)
    listed = api.client.get("/v1/accounts/acct_1/endpoints", headers=AUTH)
    assert shown.status_code == listed.status_code == 200
    assert shown.json() == {k: v for k, v in created.items() if k != "secret"}
    assert listed.json() == {"data": [shown.json()], "next_cursor": None}
    for response in (shown, listed):
        assert '"secret"' not in response.text and created["secret"] not in response.text


def test_patch_changes_given_fields_and_delete_removes(api: Api) -> None:
    created = api.create(timeout_seconds=3)
    path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
    response = api.client.patch(
        path,
        json={"events": ["order.created"], "timeout_seconds": None, "enabled": False},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["events"] == ["order.created"] and patched["timeout_seconds"] is None
    assert patched["enabled"] is False and patched["url"] == created["url"]
    assert patched["version"] > created["version"]
    assert "secret" not in patched

    unchanged = api.client.patch(path, json={}, headers=AUTH)
    assert unchanged.status_code == 200 and unchanged.json()["version"] == patched["version"]

    deleted = api.client.delete(path, headers=AUTH)
    assert deleted.status_code == 204 and deleted.content == b""
    assert api.client.get(path, headers=AUTH).status_code == 404
    assert api.client.delete(path, headers=AUTH).status_code == 404
    listed = api.client.get("/v1/accounts/acct_1/endpoints", headers=AUTH)
    assert listed.json() == {"data": [], "next_cursor": None}


def test_every_change_writes_one_audit_line_and_one_notice(api: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        created = api.create(url="https://shop.example/hook?token=very-private")
        path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
        api.client.patch(path, json={"description": "renamed"}, headers=AUTH)
        api.client.patch(path, json={}, headers=AUTH)  # no change: no line, no notice
        rotated = api.client.post(
            f"{path}/secret/rotate", json={"overlap_seconds": 60}, headers=AUTH
        ).json()
        api.client.post(f"{path}/pause", json={"reason": "maintenance"}, headers=AUTH)
        api.client.post(f"{path}/resume", headers=AUTH)
        api.client.get(path, headers=AUTH)  # reads are not audited
        api.client.delete(path, headers=AUTH)
    audit = _audit(logs)
    assert [line["action"] for line in audit] == [
        "create",
        "update",
        "rotate",
        "pause",
        "resume",
        "delete",
    ]
    for line in audit:
        assert line["actor"].startswith("token:")
        assert line["account"] == "acct_1" and line["endpoint_id"] == created["id"]
        assert line["log_level"] == "info"
    versions = [line["version"] for line in audit]
    assert versions == sorted(versions) and len(set(versions)) == 6
    assert audit[0]["url_host"] == "shop.example"
    assert audit[1]["fields"] == ["description"]
    text = repr(logs)
    for secret in (created["secret"], rotated["secret"]):
        assert secret not in text
    assert "very-private" not in text and "token=" not in text

    notices = api.notices.sent
    assert [n.change for n in notices] == [
        "created",
        "updated",
        "rotated",
        "paused",
        "resumed",
        "deleted",
    ]
    assert [n.version for n in notices] == versions
    assert {(n.account, n.endpoint_id) for n in notices} == {("acct_1", created["id"])}


def test_rendered_log_lines_carry_no_secret_or_token(api: Api) -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    created = api.create(url="https://shop.example/hook?key=hidden-query")
    path = f"/v1/accounts/acct_1/endpoints/{created['id']}"
    rotated = api.client.post(f"{path}/secret/rotate", headers=AUTH).json()
    api.client.post(f"{path}/test", headers=AUTH)
    output = stream.getvalue()
    assert '"event":"api_audit"' in output and '"event":"api_request"' in output
    for hidden in (created["secret"], rotated["secret"], AUTH["Authorization"], "hidden-query"):
        assert hidden not in output


def test_rotation_answers_a_new_secret_and_keeps_the_old_one_for_the_overlap(api: Api) -> None:
    created = api.create()
    path = f"/v1/accounts/acct_1/endpoints/{created['id']}/secret/rotate"
    response = api.client.post(path, json={"overlap_seconds": 3600}, headers=AUTH)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"] is not None
    stored = api.store.get_endpoint_with_secrets("acct_1", created["id"])
    assert stored.secret.get_secret_value() == rotated["secret"]
    assert stored.previous_secret is not None
    assert stored.previous_secret.get_secret_value() == created["secret"]

    default = api.client.post(path, headers=AUTH)  # no body: one day of overlap
    assert default.status_code == 200
    assert api.client.post(path, json={"overlap_seconds": -1}, headers=AUTH).status_code == 422


def test_another_accounts_endpoint_is_not_found(api: Api) -> None:
    theirs = api.create(account="acct_2")
    path = f"/v1/accounts/acct_1/endpoints/{theirs['id']}"
    api.create(account="acct_1")
    calls = [
        ("GET", path, None),
        ("PATCH", path, {"description": "mine now"}),
        ("DELETE", path, None),
        ("POST", f"{path}/test", None),
        ("POST", f"{path}/pause", None),
        ("POST", f"{path}/resume", None),
        ("POST", f"{path}/secret/rotate", None),
    ]
    for method, url, body in calls:
        response = api.client.request(method, url, json=body, headers=AUTH)
        assert response.status_code == 404, (method, url)
        assert set(response.json()) == {"error"}
    assert api.store.get_endpoint("acct_2", theirs["id"]).version == theirs["version"]
    assert api.pauses.calls == [] and api.probe.sent == [] and len(api.notices.sent) == 2


def test_unknown_endpoint_and_account_are_not_found(api: Api) -> None:
    api.create()
    response = api.client.get("/v1/accounts/acct_1/endpoints/ep-doesnotexist", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "account 'acct_1' has no endpoint 'ep-doesnotexist'"}
    listed = api.client.get("/v1/accounts/nobody/endpoints", headers=AUTH)
    assert listed.status_code == 404 and listed.json() == {"error": "no account 'nobody'"}
    unknown_route = api.client.get("/v1/nothing-here", headers=AUTH)
    assert unknown_route.status_code == 404 and set(unknown_route.json()) == {"error"}
    trailing = api.client.get("/v1/accounts/acct_1/endpoints/", headers=AUTH)
    assert trailing.status_code == 404  # never a redirect
    not_allowed = api.client.put("/v1/accounts/acct_1/endpoints/ep-abc", headers=AUTH)
    assert not_allowed.status_code == 405 and set(not_allowed.json()) == {"error"}
    assert not_allowed.headers["Allow"] == "DELETE, GET, PATCH"


def test_pages_walk_every_endpoint_once(api: Api) -> None:
    made = [api.create()["id"] for _ in range(7)]
    api.create(account="acct_2")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = api.client.get("/v1/accounts/acct_1/endpoints", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [endpoint["id"] for endpoint in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    default = api.client.get("/v1/accounts/acct_1/endpoints", headers=AUTH).json()
    assert [e["id"] for e in default["data"]] == seen and default["next_cursor"] is None


def test_an_exact_last_page_has_no_next_cursor(api: Api) -> None:
    for _ in range(2):
        api.create()
    body = api.client.get("/v1/accounts/acct_1/endpoints?limit=2", headers=AUTH).json()
    assert len(body["data"]) == 2 and body["next_cursor"] is None


def test_event_types_list_the_page_samples(api: Api) -> None:
    response = api.client.get("/v1/event-types", headers=AUTH)
    assert response.status_code == 200
    data = response.json()["data"]
    assert [item["event"] for item in data] == [
        "order.created",
        "order.updated",
        "order.cancelled",
    ]
    created = data[0]
    assert created["description"]
    assert created["example"]["event"] == "order.created"
    assert created["example"]["data"]["orderNumber"] == "ORD-20260131-A1B2"
    assert created["example"]["timestamp"] == "2026-01-31T10:30:00.000Z"
    assert data[2]["example"]["data"]["status"] == "cancelled"


def test_lifespan_starts_and_stops_the_notices(tmp_path: Path) -> None:
    store: EndpointStore = open_store(tmp_path)
    with running_api(store) as api:
        assert api.notices.started and not api.notices.stopped
    assert api.notices.stopped
    store.close()
