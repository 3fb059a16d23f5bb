"""webhook-notifier set-up (settings, secrets, destinations); the emitter with no broker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.url import BrokerUrl
from cli.notifier import main as notifier_main
from config.errors import ConfigError, StoreError
from config.settings import load_environment
from control.notifications.destinations import Destination, Destinations, operator_secret
from control.store.notification_targets import NotificationTargetWithSecret
from wire.operational_fact import OperationalFact
from worker.fact_emitter import FactEmitter
from worker.fact_outbox import FactSink

OPS_URL = "https://ops.example/hooks/T0KEN-in-path?key=abc"
OPS_SECRET = "ops-secret-value-123"


def test_the_operator_url_and_secret_stay_out_of_reprs_and_dumps() -> None:
    settings = load_environment(
        {"OPERATOR_NOTIFICATION_URL": OPS_URL, "OPERATOR_NOTIFICATION_SECRET": OPS_SECRET}
    )
    for shown in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "T0KEN" not in shown and OPS_SECRET not in shown
    destination = Destinations.from_settings(settings).operator
    assert destination is not None and destination.url == OPS_URL
    assert "T0KEN" not in repr(destination) and OPS_SECRET not in repr(destination)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPERATOR_NOTIFICATION_URL": "ftp://x/T0KEN"}, "must be an http:// or https:// URL"),
        ({"NOTIFICATION_WINDOW_SECONDS": "0"}, "NOTIFICATION_WINDOW_SECONDS"),
        ({"NOTIFICATION_BATCH_SECONDS": "-1"}, "NOTIFICATION_BATCH_SECONDS"),
    ],
)
def test_bad_notification_settings_are_one_clear_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_environment(environ)
    assert message in str(caught.value) and "T0KEN" not in str(caught.value)


def test_the_operator_secret_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(OPS_SECRET + "\n")
    settings = load_environment(
        {"OPERATOR_NOTIFICATION_URL": OPS_URL, "OPERATOR_NOTIFICATION_SECRET_FILE": str(path)}
    )
    assert operator_secret(settings).get_secret_value() == OPS_SECRET
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        operator_secret(settings)


def test_a_url_without_its_secret_or_nothing_to_notify_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPERATOR_NOTIFICATION_URL", OPS_URL)
    assert notifier_main([]) == 3
    assert "OPERATOR_NOTIFICATION_SECRET" in capsys.readouterr().err
    monkeypatch.delenv("OPERATOR_NOTIFICATION_URL")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert notifier_main([]) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert "nowhere to send notices" in line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert notifier_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("webhook-notifier ")


class CountingTargets:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def with_secret(self, account: str) -> NotificationTargetWithSecret | None:
        self.calls += 1
        if self.fail:
            raise StoreError("database is unavailable")
        if account != "acme":
            return None
        return NotificationTargetWithSecret(
            "acme", "https://acme.example/n", datetime.now(UTC), SecretStr("acme-secret")
        )


async def test_account_destinations_are_cached_briefly() -> None:
    now = [0.0]
    targets = CountingTargets()
    destinations = Destinations(None, targets, cache_seconds=30, clock=lambda: now[0])
    found = await destinations.account("acme")
    assert found == Destination("account", "https://acme.example/n", SecretStr("acme-secret"))
    assert await destinations.account("globex") is None
    assert await destinations.account("acme") == found
    assert targets.calls == 2
    now[0] = 31.0
    targets.fail = True
    with pytest.raises(StoreError):
        await destinations.account("acme")


async def test_the_emitter_never_holds_up_the_hooks_without_a_broker() -> None:
    sink = FactSink()
    emitter = FactEmitter.start(
        BrokerUrl.parse("amqp://guest:guest@127.0.0.1:1/"), sink, capacity=100
    )
    started = time.monotonic()
    for i in range(1000):
        sink.put(OperationalFact("dead_lettered", "acme", "shop", float(i), f"evt_{i}"))
    assert time.monotonic() - started < 2  # appends only, whatever the broker does
    assert emitter.outbox.buffered == 100  # the rest dropped and counted
    await asyncio.sleep(0.2)  # the emitter tries, fails, keeps the facts for later
    assert emitter.outbox.buffered == 100
    started = time.monotonic()
    await emitter.stop(flush_seconds=0.5)
    assert time.monotonic() - started < 3
    assert not sink.attached and emitter.outbox.buffered == 0
