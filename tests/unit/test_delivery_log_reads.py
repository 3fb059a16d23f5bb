"""The delivery log's read side in pieces: percentiles, filters, views, output, the tool's
arguments, and the API's routes and their OpenAPI description (SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from cli import log
from cli.arguments import UsageError
from cli.exit_codes import ExitCode
from cli.log_output import attempts_table, event_text, summary_table
from config.errors import InvalidInputError
from control.delivery_log.filters import OUTCOMES, attempt_filter, parse_time
from control.delivery_log.views import AttemptPageView, EndpointSummary, EventView
from control.store.attempt_listing import AttemptPage
from control.store.attempt_reader import EventHistory
from control.store.attempt_summary import (
    EndpointFigures,
    LastAttempt,
    WindowFigures,
    percentile,
)
from control.store.attempts import LoggedAttempt
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from tests.support.api import AUTH, open_store, running_api
from tests.support.attempt_log import attempt
from worker.delivery import DeliveryResult

NOW = datetime(2026, 1, 31, 10, 30, tzinfo=UTC)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0], 0.50) == 1.0
    assert percentile([], 0.5) is None


def test_filters_are_checked_and_named() -> None:
    assert parse_time("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_time("2026-01-31T10:30:00+01:00") == NOW - timedelta(hours=1)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")
    with pytest.raises(InvalidInputError) as caught:
        attempt_filter(since=NOW, until=NOW)
    assert caught.value.fields == ("since", "until")
    with pytest.raises(InvalidInputError) as caught:
        attempt_filter(outcome="exploded")
    assert caught.value.fields == ("outcome",)
    where = attempt_filter(endpoint="ep-a", outcome="timeout", status=504)
    assert (where.endpoint_ids, where.outcome, where.status) == (["ep-a"], "timeout", 504)


def test_the_outcomes_are_the_workers() -> None:
    assert set(OUTCOMES) == {
        "success",
        "http_error",
        "timeout",
        "connection_error",
        "forbidden_address",
    }
    assert DeliveryResult("timeout", 0, 1.0, "t", b"").outcome in OUTCOMES


def _logged(record_id: int, **changes: object) -> LoggedAttempt:
    defaults: dict[str, object] = {"event_id": "evt_1", "endpoint_id": "ep-shop", "started_at": NOW}
    defaults.update(changes)
    return LoggedAttempt(record_id, attempt(**defaults), NOW)  # type: ignore[arg-type]


def test_an_event_view_groups_per_endpoint_and_parses_a_json_body() -> None:
    first = _logged(1, outcome="http_error", status=500)
    second = _logged(2, attempt=2, started_at=NOW + timedelta(seconds=30))
    history = EventHistory(
        "evt_1", "acct_a", "order.created", b'{"id":"evt_1"}', {"ep-shop": [first, second]}
    )
    view = EventView.of(history)
    assert view.body == {"id": "evt_1"} and view.body_kept
    shop = view.endpoints[0]
    assert (shop.attempts, shop.delivered, shop.last_outcome) == (2, True, "success")
    assert [a.attempt for a in shop.data] == [1, 2]
    assert EventView.of(EventHistory("e", "a", "t", b"not json", {"ep": [first]})).body == (
        "not json"
    )
    gone = EventView.of(EventHistory("e", "a", "t", None, {"ep": [first]}))
    assert gone.body is None and not gone.body_kept


def test_untrusted_text_is_escaped_on_the_terminal() -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07\u202eevil"
    bad = _logged(
        1, outcome="http_error", status=500, error=hostile, response_excerpt=hostile.encode()
    )
    history = EventHistory("evt_1", "acct_a", "order.created", hostile.encode(), {"ep": [bad]})
    text = "\n".join(event_text(EventView.of(history)))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text
    table = attempts_table(AttemptPageView.of(AttemptPage([_logged(1, event_id="evt\x1b")], None)))
    assert "\x1b" not in table and "evt\\x1b" in table


def test_the_summary_table_shows_both_windows() -> None:
    last = LastAttempt(NOW - timedelta(minutes=5), "http_error", 503)
    hour = WindowFigures(NOW - timedelta(hours=1), 4, 3, 0.02, 0.9, 4, None, last)
    day = WindowFigures(NOW - timedelta(days=1), 20_000, 19_000, 0.02, 1.5, 10_000, None, last)
    text = summary_table(EndpointSummary.of("ep-shop", EndpointFigures(NOW, hour, day)))
    assert "75.0%" in text and "95.0%" in text
    assert "all attempts" in text and "newest 10000" in text
    assert "2026-01-31T10:25:00.000Z http_error 503" in text


def test_webhook_log_arguments() -> None:
    parser = log.build_parser()
    args = parser.parse_args(
        [
            "attempts",
            "--account",
            "acct_a",
            "--endpoint",
            "ep-shop",
            "--outcome",
            "timeout",
            "--status",
            "504",
            "--since",
            "2h",
            "--until",
            "2026-01-31T10:30:00Z",
            "--limit",
            "5",
        ]
    )
    assert (args.account, args.endpoint, args.outcome, args.status, args.limit) == (
        "acct_a",
        "ep-shop",
        "timeout",
        504,
        5,
    )
    assert timedelta(hours=2) - timedelta(seconds=60) < datetime.now(UTC) - args.since
    assert args.until == NOW
    assert parser.parse_args(["event", "evt_1"]).event_id == "evt_1"
    assert parser.parse_args(["summary", "ep-shop", "--format", "json"]).format == "json"
    for bad in (
        ["attempts", "--status", "abc"],
        ["attempts", "--limit", "1001"],
        ["attempts", "--since", "yesterday"],
        ["attempts", "--outcome", "exploded"],
        ["attempts", "--account", "not an account"],
        ["summary", "Not An Id!"],
        ["event"],
    ):
        with pytest.raises(UsageError):
            parser.parse_args(bad)


def test_the_routes_need_a_token_and_are_in_the_openapi_document(tmp_path: Path) -> None:
    with running_api(open_store(tmp_path)) as api:
        for path in (
            "/v1/accounts/acct_a/attempts",
            "/v1/accounts/acct_a/events/evt_1",
            "/v1/accounts/acct_a/endpoints/ep-shop/summary",
        ):
            assert api.client.get(path).status_code == 401
        assert api.client.get("/v1/accounts/acct_a/attempts", headers=AUTH).status_code == 404
        document = api.client.get("/openapi.json").json()
    paths = document["paths"]
    listing = paths["/v1/accounts/{account}/attempts"]["get"]
    names = [p["name"] for p in listing["parameters"]]
    for name in ("endpoint", "event_id", "outcome", "status", "since", "until", "limit", "cursor"):
        assert name in names
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/AttemptPageView"}
    assert "/v1/accounts/{account}/events/{event_id}" in paths
    summary = paths["/v1/accounts/{account}/endpoints/{endpoint_id}/summary"]["get"]
    assert set(summary["responses"]) == {"200", "401", "404", "422", "503"}
    schemas = document["components"]["schemas"]
    assert {"latency_p50_ms", "latency_p99_ms", "success_rate", "last_failure"} <= set(
        schemas["WindowSummary"]["properties"]
    )


UNREACHABLE = "postgresql://api:db-password-9z@127.0.0.1:1/webhooks"


def test_an_unreachable_store_is_503_without_internals() -> None:
    store = EndpointStore.open(UNREACHABLE, secrets_key=SecretStr(SecretsKey.generate().as_text()))
    try:
        with running_api(store) as api:
            responses = [
                api.client.get(path, headers=AUTH)
                for path in (
                    "/v1/accounts/acct_1/attempts?outcome=timeout",
                    "/v1/accounts/acct_1/events/evt_1",
                    "/v1/accounts/acct_1/endpoints/ep-abc/summary",
                )
            ]
    finally:
        store.close()
    for response in responses:
        assert response.status_code == 503
        assert response.json() == {"error": "the endpoint store is unavailable; try again later"}


def test_webhook_log_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    assert log.main(["summary", "ep-abc"]) == ExitCode.UNAVAILABLE
    error = capsys.readouterr().err
    assert error.startswith("webhook-log: error: database ") and "db-password-9z" not in error
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    assert log.main(["event", "evt_1"]) == ExitCode.CONFIG
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert log.main(["attempts", "--limit", "0"]) == ExitCode.USAGE
    assert "--limit" in capsys.readouterr().err
