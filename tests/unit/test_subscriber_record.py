"""The compact record a worker keeps of each subscriber (config.subscriber_record).

It must hold exactly what the validated model holds, answer the same, and
hide the same secrets; and a worker's process must not carry rich.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from config import subscriber_record
from config.logs import configure_logging
from config.subscriber_record import SubscriberRecord
from config.subscribers import CircuitBreakerOverride, CircuitBreakerPolicy, Subscriber
from worker.subscriber_source import DISABLED, PAUSED, SubscriberSpec

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_record-current-0123456789"
PREVIOUS = "whsec_record-previous-9876543210"

_BASE: dict[str, Any] = {
    "id": "shop-1",
    "account": "acme",
    "url": "https://shop.example/hook?token=t0ken",
    "secret": SECRET,
    "events": ("order.*",),
}
SUBSCRIBERS = {
    "defaults": _BASE,
    "every option": _BASE
    | {
        "previous_secret": PREVIOUS,
        "events": ("order.created", "message.#"),
        "enabled": False,
        "timeout_seconds": 2.5,
        "connect_timeout_seconds": 1,
        "max_in_flight": 3,
        "standard_webhooks": True,
        "circuit_breaker": {"failure_threshold": 2, "cooldown_seconds": 1.5},
    },
    "all accounts": {k: v for k, v in _BASE.items() if k != "account"} | {"all_accounts": True},
}


def _model(name: str) -> Subscriber:
    return Subscriber.model_validate(SUBSCRIBERS[name])


@pytest.mark.parametrize("name", sorted(SUBSCRIBERS))
def test_the_record_holds_every_field_of_the_validated_model(name: str) -> None:
    model = _model(name)
    record = SubscriberRecord.of(model)
    names = tuple(field.name for field in dataclasses.fields(SubscriberRecord))
    assert names == tuple(Subscriber.model_fields)
    assert {n: getattr(record, n) for n in names} == {n: getattr(model, n) for n in names}
    assert record.signing_secrets() == model.signing_secrets()
    assert record.host == model.host == "shop.example"
    for account in ("acme", "globex"):
        assert record.receives_account(account) == model.receives_account(account)


def test_the_record_is_frozen_and_has_no_instance_dict() -> None:
    record = SubscriberRecord.of(_model("defaults"))
    assert not hasattr(record, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.url = "https://elsewhere.example/"  # type: ignore[misc]


def test_a_record_equals_another_only_with_the_same_fields_secrets_included() -> None:
    record = SubscriberRecord.of(_model("defaults"))
    assert record == SubscriberRecord.of(_model("defaults"))
    rotated = Subscriber.model_validate(_BASE | {"secret": "whsec_another-secret"})
    assert record != SubscriberRecord.of(rotated)


@pytest.mark.parametrize("name", sorted(SUBSCRIBERS))
def test_secrets_stay_out_of_the_records_and_specs_text(name: str) -> None:
    spec = SubscriberSpec.of(_model(name), CircuitBreakerPolicy())
    shown = " ".join((repr(spec), str(spec), repr(spec.subscriber), f"{spec.subscriber}"))
    assert "SecretStr('**********')" in shown
    assert SECRET not in shown
    assert PREVIOUS not in shown


def test_endpoints_with_the_same_event_selection_share_one_tuple() -> None:
    # Built as a store read builds them: each row's values are distinct objects.
    first, second = (
        SubscriberRecord.of(
            Subscriber.model_validate(_BASE | {"id": f"shop-{n}", "events": [f"{p}.*", "x.#"]})
        )
        for n, p in ((1, "".join(["ord", "er"])), (2, "".join(["or", "der"])))
    )
    assert first.events == second.events == ("order.*", "x.#")
    assert first.events is second.events


def test_the_shared_selections_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriber_record, "_shared_selections", {})
    monkeypatch.setattr(subscriber_record, "_SHARED_SELECTIONS_MAX", 3)
    records = [
        SubscriberRecord.of(Subscriber.model_validate(_BASE | {"events": [f"e{n}.*"]}))
        for n in range(10)
    ]
    assert len(subscriber_record._shared_selections) == 3
    # Past the bound a selection is still kept, whole, as it came.
    assert [r.events for r in records] == [(f"e{n}.*",) for n in range(10)]


def test_a_spec_keeps_the_record_with_its_breaker_and_state() -> None:
    defaults = CircuitBreakerPolicy(failure_threshold=7)
    model = _model("every option")
    spec = SubscriberSpec.of(model, defaults)
    assert isinstance(spec.subscriber, SubscriberRecord)
    assert spec.subscriber == SubscriberRecord.of(model)
    assert spec.breaker == defaults.overridden_by(
        CircuitBreakerOverride(failure_threshold=2, cooldown_seconds=1.5)
    )
    assert spec.state == DISABLED
    paused = SubscriberSpec.of(_model("defaults"), defaults, paused=True)
    assert paused.state == PAUSED
    # A record given again is kept as it is (the file source and the store source
    # may hand over either).
    assert SubscriberRecord.of(spec.subscriber) is spec.subscriber
    assert not hasattr(spec, "__dict__")


def test_a_worker_process_does_not_import_rich() -> None:
    # What `python -m worker run` and `webhook-worker run` import before serving.
    code = (
        "import sys, cli.worker, worker.service, control.store.endpoints, structlog; "
        "print(sorted(m for m in ('rich', 'pygments') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_console_logs_still_show_an_exceptions_traceback() -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream=stream)
    try:
        raise ValueError("the reason")
    except ValueError:
        structlog.get_logger("test").exception("something_failed")
    text = stream.getvalue()
    assert "something_failed" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: the reason" in text
