"""Endpoint-store helpers for tests: a clock that moves only when told, and sample input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.models import EndpointInput

START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class ManualClock:
    """A store clock that stands still until ``advance`` moves it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sample_input(**changes: object) -> EndpointInput:
    """A valid endpoint input, with ``changes`` applied (validated like any input)."""
    data: dict[str, object] = {
        "url": "https://shop.example/webhooks",
        "events": ["order.*"],
        "description": "the shop's order feed",
    }
    data.update(changes)
    return EndpointInput.parse(data)


def open_sqlite_store(folder: Path, clock: ManualClock) -> EndpointStore:
    """A migrated SQLite store in ``folder`` with a fresh key, on ``clock``."""
    return EndpointStore.open(
        f"sqlite:///{folder / 'store.db'}",
        secrets_key=SecretStr(SecretsKey.generate().as_text()),
        migrate=True,
        clock=clock,
    )
