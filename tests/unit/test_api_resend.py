"""POST .../resend and .../recover: 404 for another account's endpoint or an unknown event,
422 naming the field, 503 when RabbitMQ or the store is unreachable, the typed report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, NotFoundError, StoreUnavailableError
from control.api.app import create_app
from control.api.auth import ApiTokens
from control.api.services import ApiServices
from control.delivery_log.resend_request import (
    EventResult,
    Matching,
    OneEvent,
    Recovery,
    ResendReport,
    ResendRequest,
)
from control.delivery_log.resender import LogResender
from control.store.database import Database, DatabaseUrl
from control.store.endpoints import EndpointStore
from control.store.resend_selection import ResendScope
from tests.support.api import (
    AUTH,
    NEW_ENDPOINT,
    TOKEN,
    FakePauses,
    FakeProbe,
    RecordedNotices,
    open_store,
)


@dataclass
class FakeResender:
    calls: list[tuple[ResendScope, ResendRequest, str]] = field(default_factory=list)
    error: Exception | None = None
    closed: bool = False

    def resend(self, scope: ResendScope, request: ResendRequest, actor: str) -> ResendReport:
        self.calls.append((scope, request, actor))
        if self.error is not None:
            raise self.error
        return ResendReport(
            scope.endpoint_id,
            "event",
            [EventResult("e1", scope.account, "published", "order.created")],
        )

    def close(self) -> None:
        self.closed = True


@dataclass
class App:
    client: TestClient
    resender: FakeResender
    endpoint: str


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = open_store(tmp_path)
    resender = FakeResender()
    with _client(store, resender) as client:
        created = client.post("/v1/accounts/acme/endpoints", json=NEW_ENDPOINT, headers=AUTH)
        assert created.status_code == 201, created.text
        yield App(client, resender, created.json()["id"])
    assert resender.closed
    store.close()


def _client(store: EndpointStore, resender: object) -> TestClient:
    services = ApiServices(
        store=store,
        tokens=ApiTokens((TOKEN,)),
        notices=RecordedNotices(),
        pauses=FakePauses(),
        probe=FakeProbe(),
        allow_private_networks=False,
        resender=resender,  # type: ignore[arg-type]
    )
    return TestClient(create_app(services), raise_server_exceptions=False)


def _post(app: App, action: str, body: object, account: str = "acme") -> tuple[int, dict]:  # type: ignore[type-arg]
    response = app.client.post(
        f"/v1/accounts/{account}/endpoints/{app.endpoint}/{action}", json=body, headers=AUTH
    )
    return response.status_code, response.json()


def test_one_event_is_resent_to_the_endpoint_of_the_account(app: App) -> None:
    status, answer = _post(app, "resend", {"event_id": "e1"})
    assert status == 200, answer
    assert answer == {
        "endpoint_id": app.endpoint,
        "request": "event",
        "published": 1,
        "not_found": 0,
        "refused": 0,
        "complete": True,
        "limit_reached": False,
        "stopped": None,
        "unconfirmed": [],
        "events": [
            {
                "event_id": "e1",
                "account": "acme",
                "result": "published",
                "event_type": "order.created",
                "reason": None,
            }
        ],
    }
    [(scope, request, actor)] = app.resender.calls
    assert scope == ResendScope(app.endpoint, "acme", False)
    assert request == OneEvent("e1")
    assert actor.startswith("token:")


def test_a_filter_and_a_recovery_reach_the_resender_parsed(app: App) -> None:
    body = {"outcome": "http_error", "status": 503, "since": "2026-03-01T10:00:00Z", "limit": 5}
    assert _post(app, "resend", body)[0] == 200
    assert _post(app, "recover", {"since": "2026-03-01T12:00:00+02:00"})[0] == 200
    (_, matching, _), (_, recovery, _) = app.resender.calls
    assert isinstance(matching, Matching) and matching.limit == 5
    assert matching.where.outcome == "http_error" and matching.where.status == 503
    assert matching.where.since == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert isinstance(recovery, Recovery) and recovery.since == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_another_accounts_endpoint_is_not_found(app: App) -> None:
    status, answer = _post(app, "resend", {"event_id": "e1"}, account="globex")
    assert status == 404 and "has no endpoint" in answer["error"]
    assert _post(app, "recover", {"since": "2026-03-01T10:00:00Z"}, account="globex")[0] == 404
    assert app.resender.calls == []


def test_an_unknown_event_is_not_found(app: App) -> None:
    app.resender.error = NotFoundError("event 'x' was not attempted at endpoint 'ep'")
    status, answer = _post(app, "resend", {"event_id": "x"})
    assert (status, answer) == (404, {"error": "event 'x' was not attempted at endpoint 'ep'"})


@pytest.mark.parametrize(
    ("action", "body", "fields"),
    [
        ("resend", {"event_id": "e1", "outcome": "timeout"}, ["event_id", "outcome"]),
        ("resend", {}, ["event_ids", "outcome", "status", "since", "until"]),
        ("resend", {"since": "2026-03-01T10:00:00"}, ["since"]),
        ("resend", {"status": 42}, ["status"]),
        ("resend", {"outcome": "exploded"}, ["outcome"]),
        ("resend", {"since": "2026-03-01T10:00:00Z", "limit": 0}, ["limit"]),
        ("resend", {"since": "2026-03-01T10:00:00Z", "limit": 10_001}, ["limit"]),
        ("resend", {"event_ids": []}, ["event_ids"]),
        ("resend", {"event_id": ""}, ["event_id"]),
        ("resend", {"evnt_id": "e1"}, ["evnt_id"]),
        ("recover", {}, ["since"]),
        ("recover", {"since": "yesterday"}, ["since"]),
    ],
)
def test_bad_input_is_422_naming_the_field(
    app: App, action: str, body: dict[str, object], fields: list[str]
) -> None:
    status, answer = _post(app, action, body)
    assert status == 422, answer
    assert answer["fields"] == fields
    assert app.resender.calls == []


@pytest.mark.parametrize(
    "error",
    [
        BrokerUnavailableError("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/"),
        StoreUnavailableError("the database is unreachable"),
    ],
)
def test_an_unreachable_broker_or_store_is_503(app: App, error: Exception) -> None:
    app.resender.error = error
    status, answer = _post(app, "resend", {"event_id": "e1"})
    assert status == 503
    assert "127.0.0.1" not in answer["error"] and "database" not in answer["error"]


def test_the_real_resender_answers_503_when_rabbitmq_is_down(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    resender = LogResender(
        BrokerUrl.parse("amqp://guest:guest@127.0.0.1:1/%2F"),
        Database(DatabaseUrl.parse(f"sqlite:///{tmp_path / 'store.db'}")),
    )
    try:
        with _client(store, resender) as client:
            created = client.post("/v1/accounts/acme/endpoints", json=NEW_ENDPOINT, headers=AUTH)
            path = f"/v1/accounts/acme/endpoints/{created.json()['id']}/recover"
            response = client.post(path, json={"since": "2026-03-01T10:00:00Z"}, headers=AUTH)
        assert response.status_code == 503
        assert response.json() == {
            "error": "RabbitMQ is unavailable; nothing was changed, try again later"
        }
    finally:
        store.close()


def test_the_openapi_document_describes_the_report(app: App) -> None:
    document = app.client.get("/openapi.json").json()
    operation = document["paths"]["/v1/accounts/{account}/endpoints/{endpoint_id}/resend"]["post"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ResendAnswer"}
    schema = document["components"]["schemas"]["ResendAnswer"]
    assert {"published", "not_found", "refused", "events", "limit_reached"} <= set(
        schema["properties"]
    )
    assert set(operation["responses"]) == {"200", "401", "404", "422", "503"}
    assert "/v1/accounts/{account}/endpoints/{endpoint_id}/recover" in document["paths"]
