"""Dead-letter inspection, replay and purge (library and ``webhook-dlq``) on a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
import structlog
from aiohttp import web

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from cli.dlq import main
from config.topology import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    dead_letter_queue,
    event_routing_key,
    work_queue,
)
from control.dead_letters.filters import Filters
from control.dead_letters.model import DeadLetter
from control.dead_letters.reader import (
    _close_keeping_order,
    _wait_until_returned,
    find,
    list_dead_letters,
)
from control.dead_letters.replay import replay
from tests.support.amqp import channel, depth, drain, publish_raw
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import ACCOUNT, SECRET, make_settings, running_worker, subscriber
from wire import contract

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIBERS = ("shop", "crm")

SUBSCRIBER_FILE = f"""\
subscribers:
  - id: shop
    url: http://127.0.0.1:9/webhook
    secret: {SECRET}
    account: acme
    events: ["order.*"]
  - id: crm
    url: http://127.0.0.1:9/hooks
    secret: crm-secret-value-0987
    account: acme
    events: ["order.*"]
retry:
  delays_seconds: [0.2, 0.2]
security:
  allow_private_networks: true
"""


class Run:
    """``run(*argv)`` -> (exit code, stdout, stderr); log events of the last run in ``logs``."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.logs: list[dict[str, Any]] = []

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        with structlog.testing.capture_logs() as logs:
            code = main(list(argv))
        self.logs = logs
        out, err = self._capsys.readouterr()
        return code, out, err

    def audit(self, event: str) -> dict[str, Any]:
        """The one audit line of the last run."""
        [line] = [e for e in self.logs if e["event"] == event]
        return line


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(event_type: str, order_id: str) -> bytes:
    return json.dumps(
        {"event": event_type, "data": {"id": order_id}, "timestamp": "2026-01-31T10:30:01.234Z"},
        separators=(",", ":"),
    ).encode()


def put_dead_letter(
    url: str,
    subscriber_id: str,
    event_id: str,
    event_type: str = "order.created",
    *,
    dead_at: datetime | None = None,
    status: int = 503,
    error: str = "HTTP 503",
    body: bytes | None = None,
    extra_headers: dict[str, object] | None = None,
) -> None:
    """A dead letter as the worker writes it (same exchange, routing key and headers)."""
    at = _iso(dead_at or datetime.now(UTC))
    headers: dict[str, object] = {
        contract.SUBSCRIBER: subscriber_id,
        contract.FIRST_ATTEMPT_AT: at,
        contract.LAST_ATTEMPT_AT: at,
        contract.LAST_STATUS: status,
        contract.LAST_ERROR: error,
        contract.ATTEMPTS: 3,
        contract.ATTEMPT: 3,
        contract.DEAD_LETTER_REASON: "exhausted",
        contract.DEAD_LETTERED_AT: at,
        # What a trip through a delay queue leaves behind.
        "x-death": [{"queue": "webhooks.delay.200ms", "reason": "expired", "count": 2}],
        **(extra_headers or {}),
    }
    publish_raw(
        url,
        DEAD_LETTER_EXCHANGE,
        subscriber_id,
        body if body is not None else _body(event_type, event_id),
        pika.BasicProperties(
            content_type=contract.CONTENT_TYPE,
            delivery_mode=2,
            message_id=event_id,
            type=event_type,
            headers=headers,
        ),
    )


def ids_in(url: str, queue: str) -> list[str]:
    """Event ids in ``queue``, head first, without taking them (the module under test)."""
    return [letter.event_id or "?" for letter in list_dead_letters(_broker(url), [_sub(queue)])]


def _sub(queue: str) -> str:
    return queue.split(".")[1]


def _broker(url: str) -> BrokerUrl:
    return BrokerUrl.parse(url)


@pytest.fixture
def topology(vhost_url: str) -> str:
    """The vhost with the worker's topology declared for ``shop`` and ``crm``."""
    settings = make_settings(
        vhost_url, [subscriber(s, "http://127.0.0.1:9/") for s in SUBSCRIBERS], delays=(0.2, 0.2)
    )
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    return vhost_url


@pytest.fixture
def run_cli(
    topology: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """The CLI, configured for the test's vhost and a subscriber file for shop and crm."""
    config = tmp_path / "subscribers.yaml"
    config.write_text(SUBSCRIBER_FILE, encoding="utf-8")
    monkeypatch.setenv("RABBITMQ_URL", topology)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(config))
    monkeypatch.setenv("DLQ_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.chdir(tmp_path)
    return Run(capsys)


# ------------------------------------------------------------------ reading


def test_reading_never_loses_reorders_or_consumes(topology: str, run_cli: Run) -> None:
    url = topology
    queue = dead_letter_queue("shop")
    published = [f"evt_{i:02d}" for i in range(12)]
    for i, event_id in enumerate(published):
        put_dead_letter(url, "shop", event_id, "order.created" if i % 2 else "order.updated")
    assert depth(url, queue) == 12

    broker = _broker(url)
    full = list_dead_letters(broker, ["shop"])
    assert [d.event_id for d in full] == published
    # Partial reads after a full one are the trap: a quorum queue appends returned
    # messages behind those already returned, so a reader that returns only the
    # head would move it to the back.
    for _ in range(2):
        assert [d.event_id for d in list_dead_letters(broker, ["shop"], limit=2)] == published[:2]
        updated = list_dead_letters(broker, ["shop"], Filters(event="order.updated"), limit=1)
        assert [d.event_id for d in updated] == ["evt_00"]
        assert [d.event_id for d in find(broker, ["shop"], "evt_05")] == ["evt_05"]
        assert run_cli("list", "--limit", "3")[0] == 0
        assert run_cli("show", "evt_07")[0] == 0
        assert run_cli("replay", "--event", "order.updated", "--dry-run")[0] == 0
        assert run_cli("purge", "--id", "evt_03", "--dry-run")[0] == 0
        assert depth(url, queue) == 12
        assert ids_in(url, queue) == published

    assert [json.loads(m.body)["data"]["id"] for m in drain(url, queue)] == published
    assert depth(url, queue) == 0


def test_closing_a_reader_never_rejects_buffered_deliveries(topology: str) -> None:
    """pika's BlockingChannel.close() rejects deliveries it has buffered but not handed
    out, and a quorum queue puts rejected messages ahead of those the close returns.
    The reader's close must hand everything back in one piece, in order."""
    url = topology
    queue = dead_letter_queue("crm")
    with channel(url) as ch:
        ch.confirm_delivery()
        for i in range(300):
            ch.basic_publish(
                DEAD_LETTER_EXCHANGE, "crm", b"{}", pika.BasicProperties(message_id=f"m{i:03d}")
            )
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        reader = connection.channel()
        reader.basic_qos(prefetch_count=300)
        for taken, _delivery in enumerate(reader.consume(queue), start=1):
            if taken == 5:
                break  # the rest is pushed to us meanwhile and sits in pika's buffer
        connection.process_data_events(time_limit=0.2)
        assert reader.get_waiting_message_count() > 0
        _close_keeping_order(connection, reader)
        _wait_until_returned(connection, queue, 300)
    finally:
        connection.close()
    assert [m.properties.message_id for m in drain(url, queue)] == [f"m{i:03d}" for i in range(300)]


def test_list_table_json_counts_and_filters(topology: str, run_cli: Run) -> None:
    url = topology
    now = datetime.now(UTC)
    put_dead_letter(url, "shop", "evt_old", "order.created", dead_at=now - timedelta(days=3))
    put_dead_letter(
        url,
        "shop",
        "evt_mid",
        "order.updated",
        dead_at=now - timedelta(hours=3),
        status=0,
        error="connection refused: " + "x" * 200,
    )
    put_dead_letter(url, "shop", "evt_new", "order.cancelled", dead_at=now)
    put_dead_letter(url, "crm", "evt_crm", "order.created", dead_at=now - timedelta(minutes=5))

    code, out, err = run_cli("list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["EVENT", "ID", "SUBSCRIBER"]
    assert [line.split()[0] for line in lines[1:5]] == ["evt_old", "evt_mid", "evt_new", "evt_crm"]
    mid = next(line for line in lines if line.startswith("evt_mid"))
    assert "order.updated" in mid and "connection refused" in mid and "x" * 60 not in mid
    # Counts per subscriber when nothing is filtered.
    assert any(line.split()[:2] == ["shop", "3"] for line in lines)
    assert any(line.split()[:2] == ["crm", "1"] for line in lines)

    def listed(*argv: str) -> list[str]:
        code, out, err = run_cli("list", "--format", "json", *argv)
        assert (code, err) == (0, ""), err
        document = json.loads(out)
        return [row["event_id"] for row in document["dead_letters"]]

    code, out, _ = run_cli("list", "--format", "json")
    document = json.loads(out)
    assert document["counts"] == {"shop": 3, "crm": 1}
    row = document["dead_letters"][0]
    assert row == {
        "event_id": "evt_old",
        "subscriber": "shop",
        "account": None,
        "event_type": "order.created",
        "attempts": 3,
        "last_status": 503,
        "last_error": "HTTP 503",
        "dead_lettered_at": _iso(now - timedelta(days=3)),
        "reason": "exhausted",
        "queue": dead_letter_queue("shop"),
    }
    assert json.loads(run_cli("list", "--format", "json", "--event", "order")[1])["counts"] is None

    assert listed("--subscriber", "crm") == ["evt_crm"]
    assert listed("--event", "order.created") == ["evt_old", "evt_crm"]
    assert listed("--event", "order") == ["evt_old", "evt_mid", "evt_new", "evt_crm"]
    assert listed("--event", "order.*") == ["evt_old", "evt_mid", "evt_new", "evt_crm"]
    assert listed("--event", "*.cancelled") == ["evt_new"]
    assert listed("--event", "order.create") == []  # prefixes stop at a dot
    assert listed("--older-than", "2h") == ["evt_old", "evt_mid"]
    assert listed("--older-than", "1d") == ["evt_old"]
    assert listed("--since", _iso(now - timedelta(hours=4))) == ["evt_mid", "evt_new", "evt_crm"]
    assert listed("--since", (now - timedelta(days=1)).date().isoformat(), "--subscriber", "shop")
    assert listed("--id", "evt_new", "evt_crm") == ["evt_new", "evt_crm"]
    assert listed("--limit", "2") == ["evt_old", "evt_mid"]
    assert listed("--event", "order.updated", "--older-than", "1d") == []
    assert depth(url, dead_letter_queue("shop")) == 3


def test_show_and_purge_a_body_nested_too_deep_to_walk(
    topology: str, run_cli: Run, tmp_path: Path
) -> None:
    """A 600-deep body (the worker rightly dead-letters it) used to crash `show` with
    RecursionError; now it is shown as received, secrets still masked."""
    url = topology
    deep = "[" * 600 + json.dumps(f"{SECRET} inside") + "]" * 600
    body = ('{"event":"order.created","data":{"x":' + deep + '},"timestamp":"t"}').encode()
    put_dead_letter(url, "shop", "evt_deep", body=body)

    code, out, err = run_cli("show", "evt_deep")
    assert (code, err) == (0, ""), err
    assert "shown as received" in out and SECRET not in out and "*** inside" in out

    code, out, err = run_cli("show", "evt_deep", "--format", "json")
    assert (code, err) == (0, ""), err
    [record] = json.loads(out)
    assert "payload" not in record and SECRET not in out

    backup = tmp_path / "deep.jsonl"
    code, out, err = run_cli("purge", "--id", "evt_deep", "--yes", "--backup-file", str(backup))
    assert (code, err) == (0, ""), err
    assert SECRET not in backup.read_text(encoding="utf-8")


def test_purge_backups_are_masked_like_show(topology: str, run_cli: Run, tmp_path: Path) -> None:
    url = topology
    body = json.dumps(
        {
            "event": "order.created",
            "data": {"id": "o-9", "note": f"leaked {SECRET} here", "customerName": "রহিম"},
            "timestamp": "2026-01-31T10:30:01.234Z",
        }
    ).encode()
    put_dead_letter(url, "shop", "evt_mask", body=body, extra_headers={"x-api-token": "tok-9"})
    backup = tmp_path / "masked.jsonl"
    code, _out, err = run_cli("purge", "--id", "evt_mask", "--yes", "--backup-file", str(backup))
    assert (code, err) == (0, ""), err
    text = backup.read_text(encoding="utf-8")
    assert SECRET not in text and "tok-9" not in text
    [record] = [json.loads(line) for line in text.splitlines()]
    assert json.loads(record["body"])["data"]["note"] == "leaked *** here"
    assert json.loads(record["body"])["data"]["customerName"] == "রহিম"  # the rest intact
    assert record["headers"]["x-api-token"] == "***"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_show_prints_headers_and_payload_but_never_a_secret(topology: str, run_cli: Run) -> None:
    url = topology
    body = json.dumps(
        {
            "event": "order.created",
            "data": {"id": "o-1", "note": f"leaked {SECRET} here"},
            "timestamp": "2026-01-31T10:30:01.234Z",
        }
    ).encode()
    put_dead_letter(
        url,
        "shop",
        "evt_show",
        body=body,
        error=f"HTTP 401: bad signature for {SECRET}",
        extra_headers={"x-api-token": "tok-123", "x-trace": "\x1b[31mred"},
    )
    put_dead_letter(url, "crm", "evt_show")  # one event, dead for two subscribers

    code, out, err = run_cli("show", "evt_show")
    assert (code, err) == (0, "")
    assert SECRET not in out and "tok-123" not in out
    assert "\x1b" not in out  # untrusted text cannot drive the terminal
    assert "\\x1b[31mred" in out
    assert "x-webhook-last-status: 503" in out
    assert "queue:             webhooks.shop.dlq" in out
    assert "queue:             webhooks.crm.dlq" in out
    assert '  "data": {\n    "id": "o-1",' in out  # the full payload, pretty
    assert "leaked *** here" in out

    code, out, err = run_cli("show", "evt_show", "--format", "json", "--subscriber", "shop")
    assert (code, err) == (0, "")
    assert SECRET not in out
    [record] = json.loads(out)
    assert record["payload"]["data"]["id"] == "o-1"
    assert record["headers"]["x-api-token"] == "***"
    assert record["headers"][contract.LAST_ERROR] == "HTTP 401: bad signature for ***"

    code, out, err = run_cli("show", "evt_nope")
    assert code == 1 and out == ""
    assert err.startswith("webhook-dlq: error: no dead letter with event id 'evt_nope'")
    assert depth(url, dead_letter_queue("shop")) == 1


# ------------------------------------------------------------------ replay


def test_replay_dry_run_and_confirmation_move_nothing(topology: str, run_cli: Run) -> None:
    url = topology
    for event_id in ("evt_a", "evt_b"):
        put_dead_letter(url, "shop", event_id)

    code, out, err = run_cli("replay", "--dry-run")
    assert (code, err) == (0, "")
    assert "would move evt_a  shop  order.created  webhooks.shop.dlq -> webhooks.shop.work" in out
    assert "nothing was moved" in out
    line = run_cli.audit("dlq_replayed")
    assert line["dry_run"] is True and line["counts"] == {"matched": 2, "replayed": 0}

    # No terminal and no --yes: refused, one line, still audited.
    code, out, err = run_cli("replay", "--id", "evt_a")
    assert code == 2
    assert err.count("\n") == 1 and "not confirmed (no terminal); pass --yes" in err
    assert run_cli.audit("dlq_replayed")["outcome"] == "refused"

    assert depth(url, work_queue("shop")) == 0
    assert ids_in(url, dead_letter_queue("shop")) == ["evt_a", "evt_b"]


def test_replay_by_id_moves_only_that_one_with_attempt_one(topology: str, run_cli: Run) -> None:
    url = topology
    for event_id in ("evt_1", "evt_2", "evt_3"):
        put_dead_letter(url, "shop", event_id, "order.updated")
    put_dead_letter(url, "crm", "evt_2", "order.updated")  # same event, other subscriber

    code, out, err = run_cli("replay", "--subscriber", "shop", "--id", "evt_2", "--yes")
    assert (code, err) == (0, "")
    assert "moved evt_2  shop  order.updated  webhooks.shop.dlq -> webhooks.shop.work" in out
    assert "replayed 1 dead letter" in out

    assert ids_in(url, dead_letter_queue("shop")) == ["evt_1", "evt_3"]
    assert ids_in(url, dead_letter_queue("crm")) == ["evt_2"]
    assert depth(url, work_queue("crm")) == 0
    [copy] = drain(url, work_queue("shop"))
    assert copy.properties.message_id == "evt_2"
    assert copy.properties.type == "order.updated"
    assert copy.properties.delivery_mode == 2
    assert copy.body == _body("order.updated", "evt_2")
    headers = copy.headers
    assert headers[contract.ATTEMPT] == 1
    assert headers[contract.SUBSCRIBER] == "shop"
    assert datetime.fromisoformat(headers[contract.REPLAYED_AT]) <= datetime.now(UTC)
    for gone in (contract.ATTEMPTS, contract.DEAD_LETTER_REASON, contract.LAST_STATUS, "x-death"):
        assert gone not in headers
    assert headers.get("x-delivery-count", 0) == 0  # inspections are not deliveries

    line = run_cli.audit("dlq_replayed")
    assert line["counts"] == {"matched": 1, "replayed": 1}
    assert line["filters"] == {"event_ids": ["evt_2"], "subscribers": ["shop"]}
    assert line["user"] and line["host"] and line["dry_run"] is False
    assert line["outcome"] == "done" and line["log_level"] == "info"


def test_replay_keeps_order_when_letters_arrive_meanwhile(topology: str) -> None:
    """A letter dead-lettered during a replay lands behind the ones left, not ahead.

    Acking a moved letter frees a prefetch slot, so the broker pushes the newcomer
    to the replay's consumer; closing must not reject it ahead of the others.
    """
    url = topology
    for event_id, event_type in (("evt_0", "order.created"), ("evt_1", "order.updated")):
        put_dead_letter(url, "shop", event_id, event_type)
    put_dead_letter(url, "shop", "evt_2", "order.updated")

    def arrive(_letter: DeadLetter) -> None:
        put_dead_letter(url, "shop", "evt_new", "order.updated")

    result = replay(_broker(url), ["shop"], Filters(event="order.created"), on_moved=arrive)
    assert [d.event_id for d in result.moved] == ["evt_0"]
    assert ids_in(url, dead_letter_queue("shop")) == ["evt_1", "evt_2", "evt_new"]
    assert [m.properties.message_id for m in drain(url, work_queue("shop"))] == ["evt_0"]


def test_replay_rate_limit_and_event_filter(topology: str, run_cli: Run) -> None:
    url = topology
    for i in range(4):
        put_dead_letter(url, "shop", f"evt_{i}", "order.created" if i % 2 else "order.cancelled")
    result = replay(_broker(url), ["shop"], Filters(event="order.cancelled"), rate=20)
    assert [d.event_id for d in result.moved] == ["evt_0", "evt_2"]
    assert ids_in(url, dead_letter_queue("shop")) == ["evt_1", "evt_3"]
    assert [m.properties.message_id for m in drain(url, work_queue("shop"))] == ["evt_0", "evt_2"]

    code, out, err = run_cli("replay", "--yes", "--limit", "1", "--rate", "100")
    assert (code, err) == (0, "")
    assert "moved evt_1" in out
    assert run_cli.audit("dlq_replayed")["rate"] == 100
    assert ids_in(url, dead_letter_queue("shop")) == ["evt_3"]


def test_replay_of_a_removed_subscriber_fails_and_keeps_the_letters(
    topology: str, run_cli: Run
) -> None:
    url = topology
    gone = dead_letter_queue("gone")
    with channel(url) as ch:  # its DLQ outlived it; its work queue was deleted
        ch.queue_declare(gone, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(gone, DEAD_LETTER_EXCHANGE, routing_key="gone")
    for event_id in ("evt_x", "evt_y"):
        put_dead_letter(url, "gone", event_id)

    code, out, err = run_cli("list", "--queue", gone, "--format", "json")
    assert code == 0
    assert [r["event_id"] for r in json.loads(out)["dead_letters"]] == ["evt_x", "evt_y"]

    code, out, err = run_cli("replay", "--queue", gone, "--subscriber", "gone", "--yes")
    assert code == 5
    assert err.startswith("webhook-dlq: error: not everything was replayed: webhooks.gone.dlq:")
    assert "no work queue is bound" in err and err.count("\n") == 1
    assert ids_in(url, gone) == ["evt_x", "evt_y"]
    line = run_cli.audit("dlq_replayed")
    assert line["outcome"] == "partial" and line["counts"]["replayed"] == 0
    assert "no work queue is bound" in line["failed_queues"][gone]


# ------------------------------------------------------------------ purge


def test_purge_writes_the_backup_then_empties(topology: str, run_cli: Run, tmp_path: Path) -> None:
    url = topology
    for i in range(5):
        put_dead_letter(url, "shop", f"evt_{i}", "order.created" if i < 3 else "order.updated")
    put_dead_letter(url, "shop", "evt_bin", body=b"\xff\x00 not json")
    put_dead_letter(url, "crm", "evt_keep")

    code, out, err = run_cli("purge", "--subscriber", "shop")
    assert code == 2 and "pass --yes" in err
    assert depth(url, dead_letter_queue("shop")) == 6

    backup = tmp_path / "backup.jsonl"
    code, out, err = run_cli(
        "purge",
        "--subscriber",
        "shop",
        "--event",
        "order.updated",
        "--yes",
        "--backup-file",
        str(backup),
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "2 dead letters match (webhooks.shop.dlq: 2)"
    assert f"purged 2 dead letters; backed up to {backup}" in out
    records = [json.loads(line) for line in backup.read_text(encoding="utf-8").splitlines()]
    assert [r["event_id"] for r in records] == ["evt_3", "evt_4"]
    assert json.loads(records[0]["body"])["data"]["id"] == "evt_3"
    assert records[0]["headers"][contract.LAST_STATUS] == 503
    assert records[0]["properties"]["message_id"] == "evt_3"
    assert ids_in(url, dead_letter_queue("shop")) == ["evt_0", "evt_1", "evt_2", "evt_bin"]
    line = run_cli.audit("dlq_purged")
    assert line["counts"] == {"matched": 2, "purged": 2}
    assert line["backup_file"] == str(backup)
    assert line["filters"] == {"event_type": "order.updated", "subscribers": ["shop"]}

    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # customer data: owner only

    # Everything else of shop's, to the default backup file in DLQ_BACKUP_DIR
    # (never the working directory, which in the image holds the code).
    code, out, err = run_cli("purge", "--subscriber", "shop", "--yes")
    assert (code, err) == (0, "")
    assert list(tmp_path.glob("dlq-backup-*.jsonl")) == []
    [default] = list((tmp_path / "backups").glob("dlq-backup-*.jsonl"))
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    records = [json.loads(line) for line in default.read_text(encoding="utf-8").splitlines()]
    assert [r["event_id"] for r in records] == ["evt_0", "evt_1", "evt_2", "evt_bin"]
    assert "body" not in records[3] and records[3]["body_base64"] == "/wAgbm90IGpzb24="
    assert depth(url, dead_letter_queue("shop")) == 0
    assert depth(url, dead_letter_queue("crm")) == 1

    code, out, err = run_cli("purge", "--yes", "--no-backup", "--id", "evt_keep")
    assert (code, err) == (0, "")
    assert "purged 1 dead letter" in out and "backed up" not in out
    assert depth(url, dead_letter_queue("crm")) == 0
    assert len(list((tmp_path / "backups").glob("dlq-backup-*.jsonl"))) == 1


# ------------------------------------------------------------------ CLI edges


def test_cli_errors_are_one_line_with_exit_codes(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    cases = [
        (("list", "--older-than", "soon"), 2, "not a duration"),
        (("list", "--since", "yesterday"), 2, "not an ISO-8601 time"),
        (("list", "--since", "2026-01-01", "--older-than", "1d"), 2, "not allowed with"),
        (("list", "--queue", "webhooks.shop.work"), 2, "not a dead-letter queue name"),
        (("replay", "--rate", "0"), 2, "must be above 0"),
        (("purge", "--no-backup", "--backup-file", "x"), 2, "not allowed with"),
        (("frobnicate",), 2, "invalid choice"),
        (("list", "--queue", "webhooks.never.dlq"), 1, "no such dead-letter queue"),
        (("list", "--subscriber", "never"), 1, "no such dead-letter queue"),
    ]
    for argv, expected, text in cases:
        code, _, err = run_cli(*argv)
        assert code == expected, (argv, err)
        assert err.startswith("webhook-dlq: error: ") and err.count("\n") == 1, err
        assert text in err, (argv, err)

    monkeypatch.setenv("WEBHOOK_CONFIG", str(tmp_path / "missing.yaml"))
    code, _, err = run_cli("list")
    assert code == 3 and err.startswith("webhook-dlq: error: ")

    monkeypatch.setenv("WEBHOOK_CONFIG", str(tmp_path / "subscribers.yaml"))
    monkeypatch.setenv("RABBITMQ_URL", f"amqp://guest:hunter2@127.0.0.1:{unused_tcp_port}/%2F")
    code, _, err = run_cli("list")
    assert code == 4 and "cannot connect" in err and "hunter2" not in err


def test_replay_script_runs_in_a_bare_container(topology: str, tmp_path: Path) -> None:
    put_dead_letter(topology, "crm", "evt_script")
    config = tmp_path / "subscribers.yaml"
    config.write_text(SUBSCRIBER_FILE, encoding="utf-8")
    env = {
        **os.environ,
        "RABBITMQ_URL": topology,
        "WEBHOOK_CONFIG": str(config),
        "PYTHONPATH": "",
    }
    script = ROOT / "scripts" / "replay-dead-letters"
    assert os.access(script, os.X_OK)
    assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env python3\n")
    done = subprocess.run(
        [sys.executable, str(script), "--dry-run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "would move evt_script  crm" in done.stdout
    # The audit line, JSON on stderr.
    audit = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [a["event"] for a in audit] == ["dlq_replayed"]
    assert audit[0]["dry_run"] is True
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and "pass --yes" in done.stderr
    assert depth(topology, dead_letter_queue("crm")) == 1


# ------------------------------------------------------------------ end to end


async def test_worker_dead_letters_then_replay_delivers_attempt_one(
    vhost_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = False

    def respond(_request: Received) -> web.Response:
        if healthy:
            return web.json_response({"received": True})
        return web.Response(status=503, text="down")

    receiver = await Receiver(respond).start()
    config = tmp_path / "subscribers.yaml"
    config.write_text(
        SUBSCRIBER_FILE.replace("http://127.0.0.1:9/webhook", receiver.url), encoding="utf-8"
    )
    monkeypatch.setenv("RABBITMQ_URL", vhost_url)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(config))
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url)], delays=(0.2, 0.2))
    dlq = dead_letter_queue("shop")
    try:
        async with running_worker(settings):
            await asyncio.to_thread(
                publish_raw,
                vhost_url,
                EVENTS_EXCHANGE,
                event_routing_key(ACCOUNT, "order.created"),
                _body("order.created", "o-e2e"),
                pika.BasicProperties(
                    content_type=contract.CONTENT_TYPE,
                    delivery_mode=2,
                    message_id="evt_e2e",
                    type="order.created",
                    headers={contract.ACCOUNT: ACCOUNT},
                ),
            )
            deadline = asyncio.get_running_loop().time() + 15
            while await asyncio.to_thread(depth, vhost_url, dlq) != 1:
                assert asyncio.get_running_loop().time() < deadline, "not dead-lettered in time"
                await asyncio.sleep(0.1)
            assert [r.attempt for r in receiver.requests] == [1, 2, 3]

            [letter] = await asyncio.to_thread(find, _broker(vhost_url), ["shop"], "evt_e2e")
            assert (letter.attempts, letter.last_status, letter.reason) == (3, 503, "exhausted")

            healthy = True
            with structlog.testing.capture_logs() as logs:
                code = await asyncio.to_thread(main, ["replay", "--id", "evt_e2e", "--yes"])
            assert code == 0
            await receiver.wait_for(lambda rs: len(rs) == 4, timeout=10)
    finally:
        await receiver.stop()

    replayed = receiver.requests[-1]
    assert replayed.headers["X-Webhook-Attempt"] == "1"
    assert replayed.headers["X-Webhook-Id"] == "evt_e2e"
    assert replayed.body == receiver.requests[0].body
    assert await asyncio.to_thread(depth, vhost_url, dlq) == 0
    assert await asyncio.to_thread(depth, vhost_url, work_queue("shop")) == 0
    assert [e["counts"] for e in logs if e["event"] == "dlq_replayed"] == [
        {"matched": 1, "replayed": 1}
    ]
