"""The producer against a real RabbitMQ: routing, properties, failures, the CLI."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from cli.publish import main
from config.errors import BrokerUnavailableError, PayloadError, UnroutableError
from config.subscribers import RetryPolicy, Subscriber
from config.topology import (
    EVENTS_EXCHANGE,
    build_topology,
    dead_letter_queue,
    delay_queue,
    work_queue,
)
from devtools.rabbitmq_inspection import queue_depth
from devtools.rabbitmq_node import LocalRabbitMQ
from producer import Publisher
from tests.support.amqp import channel, drain
from tests.support.worker_harness import ACCOUNT
from wire import contract
from wire.samples import sample_data

RETRY = RetryPolicy(delays_seconds=(1.0, 2.0))
PASSWORD = "pw-Never-Print-Me"


def subscriber(sub_id: str, *events: str) -> Subscriber:
    return Subscriber(
        id=sub_id,
        account=ACCOUNT,
        url=f"https://{sub_id}.example/webhook",
        secret=SecretStr(f"secret-{sub_id}"),
        events=events,
    )


SHOP = subscriber("shop", "order.*")
CRM = subscriber("crm", "order.created", "message.#")
AUDIT = subscriber("audit", "#")


@pytest.fixture
def broker(vhost_url: str) -> BrokerUrl:
    return BrokerUrl.parse(vhost_url)


@pytest.fixture
def publisher(broker: BrokerUrl) -> Iterator[Publisher]:
    with Publisher(broker) as pub:
        yield pub


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- routing ------------------------------------------------------------------


def test_events_land_in_exactly_the_matching_queues(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [SHOP, CRM, AUDIT], RETRY)
    published = {
        "order.created": publisher.publish(
            "order.created", sample_data("order.created"), account=ACCOUNT
        ),
        "order.updated": publisher.publish(
            "order.updated", sample_data("order.updated"), account=ACCOUNT
        ),
        "message.received": publisher.publish("message.received", {"text": "hi"}, account=ACCOUNT),
        "message": publisher.publish("message", {}, account=ACCOUNT),
        "invoice.paid.late": publisher.publish("invoice.paid.late", {"amount": 1}, account=ACCOUNT),
    }
    assert len(set(published.values())) == 5

    expected = {
        "shop": {"order.created", "order.updated"},
        "crm": {"order.created", "message.received", "message"},
        "audit": set(published),
    }
    for sub_id, events in expected.items():
        assert queue_depth(vhost_url, work_queue(sub_id)) == len(events), sub_id
        got = drain(vhost_url, work_queue(sub_id))
        assert {g.properties.type for g in got} == events
        assert {g.properties.message_id for g in got} == {published[e] for e in events}
    for sub_id in expected:
        assert queue_depth(vhost_url, dead_letter_queue(sub_id)) == 0
    for delay in RETRY.delays_seconds:
        assert queue_depth(vhost_url, delay_queue(delay)) == 0


def test_message_properties_and_body(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [SHOP], RETRY)
    data = sample_data("order.created")
    before = int(time.time())
    event_id = publisher.publish("order.created", data, account=ACCOUNT)
    after = int(time.time())

    with channel(vhost_url) as ch:
        method, props, body = ch.basic_get(work_queue("shop"), auto_ack=True)
    assert method is not None
    assert method.routing_key == f"{ACCOUNT}.order.created"
    assert props.headers[contract.ACCOUNT] == ACCOUNT  # beside the body, never in it
    assert ACCOUNT not in body.decode()
    assert method.exchange == EVENTS_EXCHANGE
    assert props.content_type == contract.CONTENT_TYPE == "application/json"
    assert props.delivery_mode == contract.PERSISTENT == 2
    assert props.message_id == event_id
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event_id)
    assert props.type == "order.created"
    assert before <= props.timestamp <= after
    # Attempt 1 carries none of the worker's headers (the quorum queue adds its own);
    # the producer's only header is the account.
    assert not [
        h for h in props.headers or {} if h.startswith("x-webhook-") and h != contract.ACCOUNT
    ]

    envelope = json.loads(body)
    assert list(envelope) == ["event", "data", "timestamp"]
    assert envelope["event"] == "order.created"
    assert envelope["data"] == data
    assert list(envelope["data"]) == list(data)
    stamp = envelope["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert int(datetime.fromisoformat(stamp).timestamp()) == props.timestamp


def test_given_event_id_is_the_message_id(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [AUDIT], RETRY)
    assert publisher.publish(
        "order.updated", sample_data("order.updated"), event_id="ord-7", account=ACCOUNT
    ) == ("ord-7")
    (got,) = drain(vhost_url, work_queue("audit"))
    assert got.properties.message_id == "ord-7"


def test_publish_many(vhost_url: str, broker: BrokerUrl, publisher: Publisher) -> None:
    declare_topology(broker, [SHOP], RETRY)
    ids = publisher.publish_many(
        [(ACCOUNT, "order.created", sample_data("order.created")) for _ in range(10)]
    )
    assert len(set(ids)) == 10
    got = drain(vhost_url, work_queue("shop"))
    assert [g.properties.message_id for g in got] == ids  # one queue keeps publish order


# --- failures -----------------------------------------------------------------


def test_unroutable_event_raises_and_publisher_stays_usable(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [SHOP], RETRY)
    with pytest.raises(
        UnroutableError, match=r"no endpoint of account 'acme' receives 'message\.sent'"
    ):
        publisher.publish("message.sent", {"text": "nobody listens"}, account=ACCOUNT)
    publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    assert queue_depth(vhost_url, work_queue("shop")) == 1


def test_missing_exchange_is_unroutable(broker: BrokerUrl, publisher: Publisher) -> None:
    with pytest.raises(UnroutableError, match="does not exist"):
        publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    # The channel the broker closed is replaced on the next publish.
    declare_topology(broker, [SHOP], RETRY)
    publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)


def test_invalid_payload_publishes_nothing(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [AUDIT], RETRY)
    data = sample_data("order.created")
    data["items"][0]["quantity"] = 0
    with pytest.raises(PayloadError, match=r"data\.items\[0\]\.quantity"):
        publisher.publish("order.created", data, account=ACCOUNT)
    with pytest.raises(PayloadError, match=r"(?i)nan"):
        publisher.publish("metric.sampled", {"value": float("nan")}, account=ACCOUNT)
    with pytest.raises(PayloadError, match="event type"):
        publisher.publish("order.*", {}, account=ACCOUNT)
    assert queue_depth(vhost_url, work_queue("audit")) == 0


def test_broker_down_gives_clear_error_within_bounds() -> None:
    port = closed_port()
    broker = BrokerUrl.parse(f"amqp://app:{PASSWORD}@127.0.0.1:{port}/%2F")
    publisher = Publisher(
        broker,
        connect_attempts=3,
        max_retry_seconds=3,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.2,
    )
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as caught:
        publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    assert time.monotonic() - started < 5
    text = str(caught.value)
    assert f"amqp://app:***@127.0.0.1:{port}/%2F" in text
    assert "3 attempt" in text
    assert "refused" in text.lower()
    assert PASSWORD not in text
    assert PASSWORD not in repr(caught.value)
    assert PASSWORD not in repr(publisher)
    with pytest.raises(BrokerUnavailableError), publisher:
        pass  # entering connects, with the same retries


def test_wrong_password_fails_at_once(vhost_url: str) -> None:
    broker = BrokerUrl.parse(vhost_url, password=PASSWORD)
    publisher = Publisher(broker, connect_attempts=5, backoff_initial_seconds=2)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="refused") as caught:
        publisher.connect()
    assert time.monotonic() - started < 3, "a refused login is not worth retrying"
    assert PASSWORD not in str(caught.value)


def test_reconnects_after_losing_the_connection(vhost_url: str, broker: BrokerUrl) -> None:
    topology = build_topology([SHOP], RETRY)
    with Publisher(broker, declare=topology) as publisher:
        publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
        # Pull the link out from under it, as a broker restart or a heartbeat
        # timeout would; the next publish must reconnect (and re-declare).
        publisher._connection.close()
        publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
        publisher._channel.close()
        publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    assert queue_depth(vhost_url, work_queue("shop")) == 3


def test_publish_rides_out_a_broker_restart(rabbitmq_node: LocalRabbitMQ) -> None:
    vhost = f"producer-restart-{int(time.time() * 1000)}"
    url = rabbitmq_node.add_vhost(vhost)
    broker = BrokerUrl.parse(url)
    starter: threading.Thread | None = None
    try:
        publisher = Publisher(
            broker,
            declare=build_topology([SHOP], RETRY),
            connect_attempts=200,
            max_retry_seconds=120,
            backoff_initial_seconds=0.1,
            backoff_max_seconds=0.5,
        )
        with publisher:
            publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
            rabbitmq_node.stop()
            starter = threading.Thread(target=rabbitmq_node.start, daemon=True)
            starter.start()
            # Retries with backoff while the node boots; no error reaches us.
            publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
        starter.join(timeout=120)
        assert queue_depth(url, work_queue("shop")) == 2
    finally:
        if starter is not None:
            starter.join(timeout=120)
        if not rabbitmq_node.is_running:
            rabbitmq_node.start()
        rabbitmq_node.delete_vhost(vhost)


# --- topology -----------------------------------------------------------------


def test_redeclaring_is_harmless_and_adds_new_subscribers(
    vhost_url: str, broker: BrokerUrl, publisher: Publisher
) -> None:
    declare_topology(broker, [SHOP], RETRY)
    publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    declare_topology(broker, [SHOP], RETRY)
    declare_topology(broker, [SHOP], RETRY)
    assert queue_depth(vhost_url, work_queue("shop")) == 1  # nothing purged or duplicated

    declare_topology(broker, [SHOP, CRM], RETRY)
    assert queue_depth(vhost_url, work_queue("crm")) == 0
    publisher.publish("order.created", sample_data("order.created"), account=ACCOUNT)
    publisher.publish("message.received", {"text": "hello"}, account=ACCOUNT)
    assert queue_depth(vhost_url, work_queue("shop")) == 2
    assert queue_depth(vhost_url, work_queue("crm")) == 2

    # Dropping a subscriber from the list deletes nothing.
    declare_topology(broker, [CRM], RETRY)
    assert queue_depth(vhost_url, work_queue("shop")) == 2


def test_from_settings_declares_the_topology(vhost_url: str, tmp_path: Path) -> None:
    from config.settings import load_settings

    config_file = subscriber_file(tmp_path)
    settings = load_settings(cli_env(vhost_url, config_file))
    with Publisher.from_settings(settings) as publisher:
        publisher.publish("order.cancelled", sample_data("order.cancelled"), account=ACCOUNT)
    assert queue_depth(vhost_url, work_queue("shop")) == 1
    assert queue_depth(vhost_url, dead_letter_queue("shop")) == 0


# --- the CLI ------------------------------------------------------------------


def subscriber_file(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "subscribers:\n"
        "  - id: shop\n"
        "    url: https://shop.example/webhook\n"
        "    secret: ${SHOP_SECRET}\n"
        '    account: acme\n    events: ["order.*"]\n'
        "retry:\n"
        "  delays_seconds: [1, 2]\n",
        encoding="utf-8",
    )
    return path


def cli_env(url: str, config_file: Path) -> dict[str, str]:
    return {"RABBITMQ_URL": url, "WEBHOOK_CONFIG": str(config_file), "SHOP_SECRET": "s3"}


@pytest.fixture
def cli(vhost_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment for ``main()``: this test's vhost and a subscriber file for 'shop'."""
    for name in ("RABBITMQ_USERNAME", "RABBITMQ_PASSWORD", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in cli_env(vhost_url, subscriber_file(tmp_path)).items():
        monkeypatch.setenv(name, value)
    return vhost_url


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("webhook-publish: error: "), err
    return lines[0]


def test_cli_sample(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--account", ACCOUNT, "--sample", "order.created"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    (event_id,) = out.splitlines()
    (got,) = drain(cli, work_queue("shop"))
    assert got.properties.message_id == event_id
    data = json.loads(got.body)["data"]
    assert data["customerName"] == "Rahim Uddin"
    assert data["id"] != "679d3f8a2e1b4c5d6e7f8a9b"  # a fresh order each time


def test_cli_count_prints_one_id_per_event(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--account", ACCOUNT, "order.updated", "--sample", "--count", "3"]) == 0
    out, _ = capsys.readouterr()
    ids = out.splitlines()
    assert len(set(ids)) == 3
    got = drain(cli, work_queue("shop"))
    assert [g.properties.message_id for g in got] == ids
    assert len({json.loads(g.body)["data"]["id"] for g in got}) == 3


def test_cli_progress_bar_on_a_terminal(
    cli: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["--account", ACCOUNT, "order.created", "--sample", "--count", "4"]) == 0
    out, _ = capsys.readouterr()
    assert "published 4 order.created events" in out
    assert queue_depth(cli, work_queue("shop")) == 4


def test_cli_data_file(cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sample_data("order.created")
    data["customerName"] = "রহিম উদ্দিন"
    data["note"] = "extra keys pass through"
    path = tmp_path / "order.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    assert (
        main(
            [
                "--account",
                ACCOUNT,
                "order.created",
                "--data",
                str(path),
                "--event-id",
                "evt-from-cli",
            ]
        )
        == 0
    )
    out, _ = capsys.readouterr()
    assert out.splitlines() == ["evt-from-cli"]
    (got,) = drain(cli, work_queue("shop"))
    sent = json.loads(got.body)["data"]
    assert sent == data
    assert list(sent) == list(data)


def test_cli_data_from_stdin(
    cli: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = json.dumps(sample_data("order.cancelled")).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    assert main(["--account", ACCOUNT, "order.cancelled", "--data", "-"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert queue_depth(cli, work_queue("shop")) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"id": ', "not valid JSON"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("[1, 2]", "must be a JSON object, got an array"),
    ],
)
def test_cli_bad_json(
    cli: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert main(["--account", ACCOUNT, "message.received", "--data", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_error_line(err)
    assert str(path) in line
    assert expected in line


def test_cli_failures_are_one_line(
    cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases: list[tuple[list[str], int, str]] = [
        (["order.created", "--data", str(tmp_path / "missing.json")], 2, "no such file"),
        (["order.created"], 2, "one of the arguments --data --sample is required"),
        (["order.created", "--sample", "--count", "0"], 2, "must be at least 1"),
        (["order.created", "--sample", "--count", "2", "--event-id", "x"], 2, "--count 1"),
        (["order.created", "--sample", "--event-id", "has space"], 2, "event id"),
        (["message.received", "--sample"], 2, "no sample for event 'message.received'"),
        (["Order.Created", "--sample"], 2, "no sample"),
        (["message.received", "--data", "-"], 5, "no endpoint of account 'acme' receives"),
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "hi"}'))
    for argv, code, expected in cases:
        assert main(["--account", ACCOUNT, *argv]) == code, argv
        out, err = capsys.readouterr()
        assert out == ""
        assert expected in one_error_line(err), argv

    # A broken subscriber file is a configuration error.
    bad = tmp_path / "bad.yaml"
    bad.write_text("subscribers:\n  - id: shop\n    colour: red\n", encoding="utf-8")
    monkeypatch.setenv("WEBHOOK_CONFIG", str(bad))
    assert main(["--account", ACCOUNT, "order.created", "--sample"]) == 3
    # Every mistake of the file, one line each.
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("webhook-publish: error: ") and "bad.yaml" in line for line in lines)
    assert any("(id 'shop').colour: unknown key" in line for line in lines)
    assert any("(id 'shop').url: is required" in line for line in lines)


def test_cli_broker_down(
    cli: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITMQ_URL", f"amqp://app:{PASSWORD}@127.0.0.1:{closed_port()}/%2F")
    started = time.monotonic()
    assert main(["--account", ACCOUNT, "order.created", "--sample"]) == 4
    assert time.monotonic() - started < 15
    out, err = capsys.readouterr()
    assert out == ""
    line = one_error_line(err)
    assert "unavailable" in line
    assert "app:***@127.0.0.1" in line
    assert PASSWORD not in err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--sample" in capsys.readouterr().out


def test_python_dash_m_producer_runs_the_cli(cli: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "order.created",
            "--sample",
            "--count",
            "2",
            "--account",
            ACCOUNT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""
    assert queue_depth(cli, work_queue("shop")) == 2
