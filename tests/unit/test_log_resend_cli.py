"""``webhook-log resend`` and ``recover``: arguments, the endpoint looked up, output, exit codes.

The resend itself is faked here (it is run for real in
tests/integration/test_resend.py); the endpoint store is a SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cli import log_resend
from cli.log import main
from control.delivery_log.resend_request import (
    EventResult,
    Matching,
    OneEvent,
    Recovery,
    ResendReport,
    ResendRequest,
    check_request,
)
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointInput
from control.store.resend_selection import ResendScope


@dataclass
class FakeResend:
    results: list[EventResult] = field(default_factory=list)
    calls: list[tuple[ResendScope, ResendRequest, dict[str, Any]]] = field(default_factory=list)

    def __call__(
        self, _broker: Any, _database: Any, scope: ResendScope, request: ResendRequest, **kw: Any
    ) -> ResendReport:
        check_request(request)  # as the real one does first
        self.calls.append((scope, request, kw))
        return ResendReport(scope.endpoint_id, "event", list(self.results))


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    database = f"sqlite:///{tmp_path / 'store.db'}"
    store = EndpointStore.open(
        database, secrets_key=SecretStr(SecretsKey.generate().as_text()), migrate=True
    )
    made, _ = store.create_endpoint(
        "acme", EndpointInput.parse({"url": "https://shop.example/hook", "events": ["order.*"]})
    )
    store.close()
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    monkeypatch.delenv("SECRETS_KEY", raising=False)
    yield made.id


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeResend:
    fake = FakeResend([EventResult("e1", "acme", "published", "order.created")])
    monkeypatch.setattr(log_resend, "audited_resend", fake)
    return fake


def test_resend_one_event_of_the_accounts_endpoint(
    endpoint: str, fake: FakeResend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resend", "--account", "acme", "--endpoint", endpoint, "--event-id", "e1"]) == 0
    [(scope, request, context)] = fake.calls
    assert scope == ResendScope(endpoint, "acme", False)
    assert request == OneEvent("e1")
    assert context["via"] == "cli" and context["actor"] and context["host"]
    out = capsys.readouterr().out
    assert "e1" in out and "published" in out
    assert f"1 published, 0 not found, 0 refused (endpoint {endpoint})" in out


def test_a_filter_and_a_recovery_parsed_as_the_api_does(endpoint: str, fake: FakeResend) -> None:
    base = ["--account", "acme", "--endpoint", endpoint]
    assert (
        main(
            [
                "resend",
                *base,
                "--outcome",
                "http_error",
                "--status",
                "503",
                "--since",
                "2026-03-01T10:00:00Z",
                "--event-ids",
                "a",
                "b",
                "--limit",
                "5",
            ]
        )
        == 0
    )
    assert main(["recover", *base, "--since", "2026-03-01"]) == 0
    (_, matching, _), (_, recovery, _) = fake.calls
    assert isinstance(matching, Matching) and matching.limit == 5
    assert matching.where.event_ids == frozenset({"a", "b"})
    assert (matching.where.outcome, matching.where.status) == ("http_error", 503)
    assert (
        isinstance(recovery, Recovery) and recovery.since.isoformat() == "2026-03-01T00:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--event-id", "e1", "--outcome", "timeout"], "give either --event-id or a filter"),
        (["--since", "2026-03-01", "--limit", "20000"], "limit: must be 1-10000"),
        ([], "filter: give event_id"),
        (["--status", "42"], "must be an HTTP status"),
        (["--outcome", "exploded"], "invalid choice"),
        (["--since", "yesterday"], "not an ISO-8601 time"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    endpoint: str,
    fake: FakeResend,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(["resend", "--account", "acme", "--endpoint", endpoint, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert fake.calls == []


def test_another_accounts_endpoint_is_not_found(
    endpoint: str, fake: FakeResend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resend", "--account", "globex", "--endpoint", endpoint, "--event-id", "e"]) == 1
    assert f"account 'globex' has no endpoint '{endpoint}'" in capsys.readouterr().err
    assert fake.calls == []


def test_no_store_and_no_subscriber_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeResend
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    assert (
        main(["recover", "--account", "acme", "--endpoint", "shop", "--since", "2026-03-01"]) == 1
    )
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("results", "code"),
    [
        ([], 0),
        ([EventResult("a", "acme", "published"), EventResult("b", "acme", "not_found")], 1),
        ([EventResult("a", "acme", "published"), EventResult("b", "acme", "refused")], 5),
    ],
)
def test_exit_codes_and_json(
    endpoint: str,
    fake: FakeResend,
    capsys: pytest.CaptureFixture[str],
    results: list[EventResult],
    code: int,
) -> None:
    fake.results = results
    argv = ["recover", "--account", "acme", "--endpoint", endpoint, "--since", "2026-03-01"]
    assert main([*argv, "--format", "json"]) == code
    document = json.loads(capsys.readouterr().out)
    assert [e["result"] for e in document["events"]] == [r.result for r in results]
    assert document["endpoint_id"] == endpoint
