"""``webhook-dlq`` on a DLQ holding messages whose properties pika cannot decode.

Two kinds: copies the *broker* dead-lettered (delivery limit) after consumers
kept failing on them, whose own properties are undecodable, and copies the
worker dead-lettered as poison, which carry the raw bytes in a header.  Before
the guarded decode every command failed on such a queue (the connection
dropped at the first one); replay also failed on a header key that is not UTF-8.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import structlog

from broker.declarer import declare_topology
from cli.dlq import main
from config.topology import DEAD_LETTER_EXCHANGE, dead_letter_queue, work_queue
from tests.support import redteam_amqp
from tests.support.amqp import channel, depth, drain, publish_raw
from tests.support.raw_amqp import publish_raw_properties, reject_until_gone
from tests.support.worker_harness import ACCOUNT, SECRET, make_settings, subscriber
from wire import contract

ROOT = Path(__file__).resolve().parents[2]
SHOP_DLQ = dead_letter_queue("shop")
BODY = b'{"event":"order.created","data":{"id":"x"},"timestamp":"2026-01-31T10:30:01.234Z"}'
SUBSCRIBER_FILE = f"""\
subscribers:
  - id: shop
    url: http://127.0.0.1:9/webhook
    secret: {SECRET}
    account: acme
    events: ["order.*"]
"""
# A copy the worker made: what it could read, and the raw bytes it could not.
WORKER_COPY_RAW = redteam_amqp.properties(
    "worker-copy",
    (b"x-sent-at", redteam_amqp.timestamp(2**63)),
    (b"x-api-token", redteam_amqp.long_string(b"tok-123")),
    (b"x-note", redteam_amqp.long_string(f"leaked {SECRET}".encode())),
)
SHORT_LIMIT = "redteam.short-limit"
SHORT_LIMIT_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 1,
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-routing-key": "shop",
}
ORDER = [
    "evt_a",
    "timestamp-2pow63",
    "table-nested-5000-deep",
    "worker-copy",
    "header-key-not-utf8",
    "evt_z",
]


@pytest.fixture
def dlq(
    vhost_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """shop's topology and a DLQ holding, in order, the letters named in ORDER."""
    settings = make_settings(vhost_url, [subscriber("shop", "http://127.0.0.1:9/")])
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    _put_plain(vhost_url, "evt_a")
    _broker_dead_letter(vhost_url, "timestamp-2pow63", work_queue("shop"))
    # RabbitMQ takes ~0.2 s to redeliver a table nested 5,000 deep, so this one
    # goes through a queue like shop's with a delivery limit of 1 instead of 20.
    with channel(vhost_url) as ch:
        ch.queue_declare(SHORT_LIMIT, durable=True, arguments=SHORT_LIMIT_ARGUMENTS)
    _broker_dead_letter(vhost_url, "table-nested-5000-deep", SHORT_LIMIT)
    _put_worker_copy(vhost_url)
    # Decodable, but its header key is not UTF-8; straight into the DLQ.
    publish_raw_properties(vhost_url, "", SHOP_DLQ, redteam_amqp.load("header-key-not-utf8"), BODY)
    _put_plain(vhost_url, "evt_z")
    assert depth(vhost_url, SHOP_DLQ) == len(ORDER)
    config = tmp_path / "subscribers.yaml"
    config.write_text(SUBSCRIBER_FILE, encoding="utf-8")
    monkeypatch.setenv("RABBITMQ_URL", vhost_url)
    monkeypatch.setenv("WEBHOOK_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    return vhost_url


def _put_plain(url: str, event_id: str) -> None:
    headers = {
        contract.ACCOUNT: ACCOUNT,
        contract.SUBSCRIBER: "shop",
        contract.DEAD_LETTER_REASON: "exhausted",
        contract.DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
    }
    properties = pika.BasicProperties(delivery_mode=2, message_id=event_id, headers=headers)
    publish_raw(url, DEAD_LETTER_EXCHANGE, "shop", BODY, properties)


def _broker_dead_letter(url: str, name: str, queue: str) -> None:
    """What a worker without the guarded decode caused: the broker dead-letters it."""
    before = depth(url, SHOP_DLQ)
    publish_raw_properties(url, "", queue, redteam_amqp.load(name), BODY)
    assert reject_until_gone(url, queue) > 1
    deadline = time.monotonic() + 10
    while depth(url, SHOP_DLQ) == before:
        assert time.monotonic() < deadline, "the broker's dead letter never arrived"
        time.sleep(0.05)


def _put_worker_copy(url: str) -> None:
    headers = {
        contract.ACCOUNT: ACCOUNT,
        "x-api-token": "tok-123",
        "x-note": f"leaked {SECRET}",
        contract.SUBSCRIBER: "shop",
        contract.DEAD_LETTER_REASON: (
            "poison: message properties cannot be decoded (OverflowError in header 'x-sent-at')"
        ),
        contract.DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
        contract.ATTEMPTS: 0,
        contract.RAW_PROPERTIES: base64.b64encode(WORKER_COPY_RAW).decode(),
        contract.RAW_PROPERTIES_SIZE: len(WORKER_COPY_RAW),
    }
    properties = pika.BasicProperties(
        content_type=contract.CONTENT_TYPE,
        delivery_mode=2,
        message_id="worker-copy",
        type="order.created",
        headers=headers,
    )
    publish_raw(url, DEAD_LETTER_EXCHANGE, "shop", BODY, properties)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with structlog.testing.capture_logs():
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = _cli(capsys, "list", "--format", "json")
    assert (code, err) == (0, ""), err
    rows: list[dict[str, Any]] = json.loads(out)["dead_letters"]
    return rows


def test_list_in_a_fresh_process_sees_every_letter(dlq: str, tmp_path: Path) -> None:
    # A process of its own: the tool installs the guarded decode by itself.
    env = {
        **os.environ,
        "RABBITMQ_URL": dlq,
        "WEBHOOK_CONFIG": str(tmp_path / "subscribers.yaml"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli.dlq", "list", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["dead_letters"]
    assert [row["event_id"] for row in rows] == ORDER
    assert depth(dlq, SHOP_DLQ) == len(ORDER)


def test_list_and_show_display_undecodable_letters(
    dlq: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {row["event_id"]: row for row in _listed(capsys)}
    assert list(rows) == ORDER
    broker_copy = rows["timestamp-2pow63"]
    assert broker_copy["undecodable"] == "OverflowError in header 'x-sent-at'"
    assert broker_copy["reason"] == "broker: delivery_limit"  # x-death could be read
    assert broker_copy["account"] == ACCOUNT
    assert rows["table-nested-5000-deep"]["undecodable"] == "RecursionError in header 'x-nested'"
    assert "undecodable" not in rows["worker-copy"]  # its own properties are fine
    assert rows["worker-copy"]["reason"].startswith("poison: message properties cannot be")

    code, out, err = _cli(capsys, "show", "timestamp-2pow63")
    assert (code, err) == (0, "")
    assert "undecodable:       OverflowError in header 'x-sent-at'" in out
    assert "reason:            broker: delivery_limit" in out
    title, raw = _raw_block(out)
    assert title.startswith(f"raw properties ({len(raw)} bytes, base64")
    assert b"x-sent-at" + redteam_amqp.timestamp(2**63) in raw

    code, out, err = _cli(capsys, "show", "worker-copy")
    assert (code, err) == (0, "")
    assert "x-webhook-raw-properties: (shown below as raw properties)" in out
    title, raw = _raw_block(out)
    assert title.startswith(f"raw properties ({len(WORKER_COPY_RAW)} bytes")
    assert len(raw) == len(WORKER_COPY_RAW) and b"x-sent-at" in raw
    assert b"tok-123" not in raw and SECRET.encode() not in raw  # blanked, length kept
    assert SECRET not in out and "tok-123" not in out

    code, out, err = _cli(capsys, "show", "table-nested-5000-deep", "--format", "json")
    assert (code, err) == (0, "")
    [record] = json.loads(out)
    assert record["undecodable"] == "RecursionError in header 'x-nested'"
    assert record["properties"]["message_id"] == "table-nested-5000-deep"
    assert len(base64.b64decode(record["raw_properties_base64"])) > 35000
    assert depth(dlq, SHOP_DLQ) == len(ORDER)  # reading changed nothing


def _raw_block(out: str) -> tuple[str, bytes]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("raw properties ("))
    encoded = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        encoded.append(line.strip())
    return lines[start], base64.b64decode("".join(encoded))


def test_replay_moves_every_letter_without_what_could_not_be_decoded(
    dlq: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "replay", "--yes")
    assert (code, err) == (0, ""), err
    assert "replayed 6 dead letters" in out
    note = "note: replayed without the headers that could not be decoded"
    # The broker's copy and the worker's copy of the same kind of message.
    assert out.count(f"{note} (OverflowError in header 'x-sent-at')") == 2
    assert f"{note} (RecursionError in header 'x-nested')" in out
    assert out.count(note) == 3  # the worker's copy too
    assert depth(dlq, SHOP_DLQ) == 0

    copies = drain(dlq, work_queue("shop"))
    assert [c.properties.message_id for c in copies] == ORDER  # order kept
    by_id = {c.properties.message_id: c for c in copies}
    for name in ("timestamp-2pow63", "table-nested-5000-deep", "worker-copy"):
        headers = by_id[name].headers
        assert headers[contract.ATTEMPT] == 1
        assert headers[contract.ACCOUNT] == ACCOUNT
        assert headers[contract.REPLAY_NOTE].startswith(note.removeprefix("note: "))
        for gone in ("x-sent-at", "x-nested", "x-death", contract.RAW_PROPERTIES):
            assert gone not in headers, (name, gone)
        assert by_id[name].body == BODY
    assert by_id["header-key-not-utf8"].headers[b"x-\xff\xfe"] == b"\xff not utf-8"
    assert contract.REPLAY_NOTE not in by_id["evt_a"].headers


def test_purge_backs_up_undecodable_letters_then_removes_them(
    dlq: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backup = tmp_path / "backup.jsonl"
    code, out, err = _cli(capsys, "purge", "--yes", "--backup-file", str(backup))
    assert (code, err) == (0, ""), err
    assert f"purged 6 dead letters; backed up to {backup}" in out
    assert depth(dlq, SHOP_DLQ) == 0
    records = [json.loads(line) for line in backup.read_text(encoding="utf-8").splitlines()]
    assert [r["event_id"] for r in records] == ORDER
    broker_copy = records[1]
    assert broker_copy["undecodable"] == "OverflowError in header 'x-sent-at'"
    raw = base64.b64decode(broker_copy["raw_properties_base64"])
    assert b"x-sent-at" + redteam_amqp.timestamp(2**63) in raw  # kept whole in the backup
    assert base64.b64decode(records[3]["raw_properties_base64"]) == WORKER_COPY_RAW
    assert "raw_properties_base64" not in records[0]
