"""Reading the delivery log through the API and ``webhook-log``, on SQLite and PostgreSQL.

Attempts are written straight through the recorder's writer (``AttemptStore``);
the API app runs over an endpoint store on the same database, its clock fixed,
so every figure is known in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from tests.support.api import AUTH, Api, running_api
from tests.support.attempt_log import attempt, write
from tests.support.store import ManualClock, sample_input

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(database_url: str, clock: ManualClock) -> Iterator[EndpointStore]:
    opened = EndpointStore.open(
        database_url,
        secrets_key=SecretStr(SecretsKey.generate().as_text()),
        migrate=True,
        clock=clock,
    )
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def api(store: EndpointStore) -> Iterator[Api]:
    with running_api(store) as running:
        yield running


def _get(api: Api, path: str, **params: Any) -> Any:
    response = api.client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def _error(api: Api, path: str, expected: int, **params: Any) -> dict[str, Any]:
    response = api.client.get(path, params=params, headers=AUTH)
    assert response.status_code == expected, response.text
    body: dict[str, Any] = response.json()
    return body


def _endpoint(store: EndpointStore, account: str, **changes: Any) -> str:
    return store.create_endpoint(account, sample_input(**changes))[0].id


def test_an_account_sees_only_attempts_at_its_own_endpoints(
    database_url: str, store: EndpointStore, api: Api, clock: ManualClock
) -> None:
    now = clock.now
    shop_a = _endpoint(store, "acct_a")
    shop_b = _endpoint(store, "acct_b")
    # The operator's all-accounts endpoint receives both accounts' events.
    audit = _endpoint(store, "ops", all_accounts=True)
    write(
        database_url,
        [
            attempt("evt_a1", shop_a, now + timedelta(seconds=1), account="acct_a"),
            attempt("evt_a1", audit, now + timedelta(seconds=2), account="acct_a"),
            attempt("evt_b1", shop_b, now + timedelta(seconds=3), account="acct_b"),
            attempt("evt_b1", audit, now + timedelta(seconds=4), account="acct_b"),
        ],
    )

    def seen(account: str) -> list[tuple[str, str]]:
        page = _get(api, f"/v1/accounts/{account}/attempts")
        return [(a["event_id"], a["endpoint_id"]) for a in page["data"]]

    assert seen("acct_a") == [("evt_a1", shop_a)]
    assert seen("acct_b") == [("evt_b1", shop_b)]
    assert seen("ops") == [("evt_b1", audit), ("evt_a1", audit)]
    # Another account's event and endpoint are "not found", like unknown ones.
    _error(api, "/v1/accounts/acct_b/events/evt_a1", 404)
    _error(api, "/v1/accounts/acct_b/attempts", 404, endpoint=shop_a)
    _error(api, f"/v1/accounts/acct_b/endpoints/{shop_a}/summary", 404)
    _error(api, "/v1/accounts/acct_b/attempts", 404, endpoint="ep-nosuchendpoint")
    _error(api, "/v1/accounts/acct_nobody/attempts", 404)
    # A's event as the ops account sees it: only the attempt at its own endpoint.
    event = _get(api, "/v1/accounts/ops/events/evt_a1")
    assert event["account"] == "acct_a"
    assert [e["endpoint_id"] for e in event["endpoints"]] == [audit]
    assert [
        e["endpoint_id"] for e in _get(api, "/v1/accounts/acct_a/events/evt_a1")["endpoints"]
    ] == [shop_a]


def test_a_reused_endpoint_id_does_not_show_the_previous_owners_attempts(
    database_url: str, store: EndpointStore, api: Api, clock: ManualClock
) -> None:
    store.create_endpoint("acct_a", sample_input(), endpoint_id="ep-shared")
    write(database_url, [attempt("evt_old", "ep-shared", clock.now, account="acct_a")])
    store.delete_endpoint("acct_a", "ep-shared")
    # A's deleted endpoint keeps its history for A.
    assert [a["event_id"] for a in _get(api, "/v1/accounts/acct_a/attempts")["data"]] == ["evt_old"]
    clock.advance(60)
    store.create_endpoint("acct_b", sample_input(all_accounts=True), endpoint_id="ep-shared")
    write(
        database_url,
        [attempt("evt_new", "ep-shared", clock.now + timedelta(seconds=1), account="acct_c")],
    )
    page = _get(api, "/v1/accounts/acct_b/attempts", endpoint="ep-shared")
    assert [a["event_id"] for a in page["data"]] == ["evt_new"]
    _error(api, "/v1/accounts/acct_b/events/evt_old", 404)
    summary = _get(api, "/v1/accounts/acct_b/endpoints/ep-shared/summary")
    assert summary["last_day"]["attempts"] == 1


def test_filters_and_cursor_pages(
    database_url: str, store: EndpointStore, api: Api, clock: ManualClock
) -> None:
    now = clock.now
    first, second = _endpoint(store, "acct_a"), _endpoint(store, "acct_a")
    records = []
    for n in range(25):
        failed = n % 5 == 0
        records.append(
            attempt(
                f"evt_{n:02d}",
                first if n % 2 else second,
                now - timedelta(minutes=n),
                outcome="http_error" if failed else "success",
                status=503 if failed else 200,
            )
        )
    write(database_url, records)
    path = "/v1/accounts/acct_a/attempts"

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = _get(api, path, **params)
        seen += [a["event_id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"evt_{n:02d}" for n in range(25)]  # newest first, each once

    def events(**filters: Any) -> list[str]:
        return [a["event_id"] for a in _get(api, path, **filters)["data"]]

    assert events(outcome="http_error") == ["evt_00", "evt_05", "evt_10", "evt_15", "evt_20"]
    assert events(status=503, endpoint=first) == ["evt_05", "evt_15"]
    assert events(event_id="evt_07") == ["evt_07"]
    since, until = (now - timedelta(minutes=3)).isoformat(), now.isoformat()
    assert events(since=since, until=until) == ["evt_01", "evt_02", "evt_03"]

    for params, fields in (
        ({"since": "yesterday"}, ["since"]),
        ({"since": "2026-02-30"}, ["since"]),
        ({"since": until, "until": since}, ["since", "until"]),
        ({"outcome": "exploded"}, ["outcome"]),
        ({"status": "abc"}, ["status"]),
        ({"limit": 0}, ["limit"]),
        ({"limit": 1001}, ["limit"]),
        ({"cursor": "bm90IGEgY3Vyc29y"}, ["cursor"]),
        ({"endpoint": "Not An Id!"}, ["endpoint"]),
    ):
        assert _error(api, path, 422, **params)["fields"] == fields, params


def test_an_event_shows_every_attempt_per_endpoint_in_order(
    database_url: str, store: EndpointStore, api: Api, clock: ManualClock
) -> None:
    now = clock.now
    shop, crm = _endpoint(store, "acct_a"), _endpoint(store, "acct_a")
    at = [now + timedelta(seconds=s) for s in range(10)]
    write(
        database_url,
        [  # written out of order: the view orders them
            attempt("evt_x", shop, at[5], attempt=1),  # the replay, later: attempt 1 again
            attempt("evt_x", crm, at[1], attempt=1),
            attempt("evt_x", shop, at[2], attempt=2, outcome="timeout", status=None),
            attempt("evt_x", shop, at[0], attempt=1, outcome="http_error", status=500),
            attempt(
                "evt_x",
                shop,
                at[3],
                attempt=3,
                outcome="http_error",
                status=502,
                disposition="dead_lettered",
                next_attempt=None,
                dead_letter_reason="max_attempts",
            ),
        ],
    )
    event = _get(api, "/v1/accounts/acct_a/events/evt_x")
    assert event["body_kept"] is True
    assert event["body"] == {"type": "order.created", "id": "evt_x", "account": "acct_a"}
    assert event["event_type"] == "order.created"
    assert [e["endpoint_id"] for e in event["endpoints"]] == [shop, crm]
    shop_view = event["endpoints"][0]
    assert [(a["attempt"], a["outcome"]) for a in shop_view["data"]] == [
        (1, "http_error"),
        (2, "timeout"),
        (3, "http_error"),
        (1, "success"),
    ]
    assert shop_view["delivered"] is True and shop_view["attempts"] == 4
    assert shop_view["data"][2]["dead_letter_reason"] == "max_attempts"
    assert shop_view["data"][0]["response_excerpt"] == "try later"
    _error(api, "/v1/accounts/acct_a/events/evt_unknown", 404)


def test_the_summary_figures_are_exact(
    database_url: str, store: EndpointStore, api: Api, clock: ManualClock
) -> None:
    now = clock.now
    shop, other = _endpoint(store, "acct_a"), _endpoint(store, "acct_a")
    records = []
    # Last hour: 100 attempts with latencies 1..100 ms; every 10th failed (10 failures).
    for n in range(1, 101):
        failed = n % 10 == 0
        records.append(
            attempt(
                f"evt_h{n}",
                shop,
                now - timedelta(seconds=3000 - n * 10),
                outcome="http_error" if failed else "success",
                status=500 if failed else 200,
                milliseconds=float(n),
            )
        )
    # Earlier that day: 100 successes at 1,000 ms, the last one 2 hours ago.
    for n in range(100):
        records.append(
            attempt(f"evt_d{n}", shop, now - timedelta(hours=2, minutes=n), milliseconds=1000.0)
        )
    # A timeout 5 hours ago; older than a day, and another endpoint's: not counted.
    records.append(
        attempt(
            "evt_t",
            shop,
            now - timedelta(hours=5),
            outcome="timeout",
            status=None,
            milliseconds=10_000.0,
        )
    )
    records.append(attempt("evt_old", shop, now - timedelta(days=1, minutes=1)))
    records.append(attempt("evt_o", other, now - timedelta(minutes=1)))
    write(database_url, records)

    summary = _get(api, f"/v1/accounts/acct_a/endpoints/{shop}/summary")
    hour, day = summary["last_hour"], summary["last_day"]
    assert (hour["attempts"], hour["successes"], hour["failures"]) == (100, 90, 10)
    assert hour["success_rate"] == 0.9
    assert (hour["latency_p50_ms"], hour["latency_p99_ms"]) == (50.0, 99.0)
    assert hour["latency_sample"] == 100
    last_success_at = (now - timedelta(seconds=3000 - 99 * 10)).isoformat().replace("+00:00", "Z")
    last_failure_at = (now - timedelta(seconds=3000 - 100 * 10)).isoformat().replace("+00:00", "Z")
    assert hour["last_success"] == {"at": last_success_at, "outcome": "success", "status": 200}
    assert hour["last_failure"] == {"at": last_failure_at, "outcome": "http_error", "status": 500}

    assert (day["attempts"], day["successes"], day["failures"]) == (201, 190, 11)
    assert day["success_rate"] == pytest.approx(190 / 201)
    # 201 latencies: 1..100, then 100 x 1000, then 10000; rank 101 is 1000, rank 199 too.
    assert (day["latency_p50_ms"], day["latency_p99_ms"]) == (1000.0, 1000.0)
    assert day["last_failure"] == hour["last_failure"]

    healthy = _get(api, f"/v1/accounts/acct_a/endpoints/{other}/summary")["last_day"]
    assert (healthy["attempts"], healthy["success_rate"], healthy["last_failure"]) == (1, 1.0, None)
    assert healthy["last_success"]["at"] == (now - timedelta(minutes=1)).isoformat().replace(
        "+00:00", "Z"
    )

    clock.advance(3 * 3600)  # three hours on: the last hour is empty
    later = _get(api, f"/v1/accounts/acct_a/endpoints/{shop}/summary")["last_hour"]
    assert later["attempts"] == 0 and later["success_rate"] is None
    assert later["latency_p50_ms"] is None and later["last_success"] is None


def _webhook_log(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "cli.log", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_webhook_log_answers_what_the_api_answers(
    database_url: str, store: EndpointStore, api: Api
) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)  # the tool's clock is the real one
    shop_a, shop_b = _endpoint(store, "acct_a"), _endpoint(store, "acct_b")
    write(
        database_url,
        [
            attempt(
                "evt_1",
                shop_a,
                now - timedelta(minutes=3),
                outcome="http_error",
                status=503,
                milliseconds=1200.0,
            ),
            attempt("evt_1", shop_a, now - timedelta(minutes=2), attempt=2, milliseconds=80.0),
            attempt("evt_2", shop_b, now - timedelta(minutes=1), account="acct_b"),
        ],
    )
    listed = _webhook_log(database_url, "attempts", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [a["event_id"] for a in json.loads(listed.stdout)["data"]] == ["evt_2", "evt_1", "evt_1"]
    mine = _webhook_log(database_url, "attempts", "--account", "acct_a", "--limit", "1")
    assert mine.returncode == 0, mine.stderr
    assert "evt_1" in mine.stdout and "evt_2" not in mine.stdout
    assert "--cursor" in mine.stderr

    story = _webhook_log(database_url, "event", "evt_1")
    assert story.returncode == 0, story.stderr
    lines = story.stdout.splitlines()
    assert lines[0] == "event evt_1  order.created  account acct_a"
    attempt_lines = [line for line in lines if line.startswith("  #")]
    assert [line.split()[0] for line in attempt_lines] == ["#1", "#2"]
    assert "http_error  503  1200 ms  retry -> #2" in attempt_lines[0]
    as_api = _get(api, "/v1/accounts/acct_a/events/evt_1")
    as_tool = json.loads(
        _webhook_log(
            database_url, "event", "evt_1", "--account", "acct_a", "--format", "json"
        ).stdout
    )
    assert as_tool == as_api

    summary = _webhook_log(database_url, "summary", shop_a, "--format", "json")
    assert summary.returncode == 0, summary.stderr
    figures = json.loads(summary.stdout)["last_hour"]
    assert (figures["attempts"], figures["success_rate"]) == (2, 0.5)
    assert (figures["latency_p50_ms"], figures["latency_p99_ms"]) == (80.0, 1200.0)

    hidden = _webhook_log(database_url, "summary", shop_a, "--account", "acct_b")
    assert hidden.returncode == 1
    assert hidden.stderr.startswith("webhook-log: error: account 'acct_b' has no endpoint")
    unknown = _webhook_log(database_url, "event", "evt_nope")
    assert unknown.returncode == 1 and "evt_nope" in unknown.stderr
    bad = _webhook_log(database_url, "attempts", "--status", "abc")
    assert bad.returncode == 2 and "--status" in bad.stderr
