"""SpoolingPublisher's bookkeeping with a fake publisher: order, restarts, rejects, validation."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from config.errors import BrokerUnavailableError, NackedError, PayloadError, UnroutableError
from producer.spool import SpoolingPublisher
from tests.support.worker_harness import ACCOUNT


class FakePublisher:
    """Records what reached the 'broker'; ``down`` makes every publish fail."""

    def __init__(self) -> None:
        self.down = False
        self.unroutable: set[str] = set()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.closed = False

    def publish(
        self, event_type: str, data: dict[str, Any], *, account: str, event_id: str | None = None
    ) -> str:
        assert event_id is not None and account == ACCOUNT
        if self.down:
            raise BrokerUnavailableError("broker away")
        if event_type in self.unroutable:
            raise UnroutableError(f"no queue for {event_type}")
        self.sent.append((event_id, event_type, data))
        return event_id

    def close(self) -> None:
        self.closed = True


def _spooler(tmp_path: Path, fake: FakePublisher) -> SpoolingPublisher:
    return SpoolingPublisher(fake, tmp_path / "spool.db")  # type: ignore[arg-type]


def test_publishes_straight_through_when_the_broker_is_up(tmp_path: Path) -> None:
    fake = FakePublisher()
    with _spooler(tmp_path, fake) as spool:
        event_id = spool.publish("note.added", {"n": 1}, account=ACCOUNT)
        assert fake.sent == [(event_id, "note.added", {"n": 1})]
        assert spool.pending() == 0
    assert fake.closed


def test_spools_while_down_and_flushes_in_order_after_a_restart(tmp_path: Path) -> None:
    fake = FakePublisher()
    fake.down = True
    spool = _spooler(tmp_path, fake)
    data = [{"n": i, "price": 1250.0, "name": "রহিম 😀", "odd": "\ud800"} for i in range(5)]
    ids = [
        spool.publish("note.added", d, event_id=f"evt_{i}", account=ACCOUNT)
        for i, d in enumerate(data)
    ]
    assert spool.pending() == 5 and fake.sent == []
    spool.close()

    fake.down = False
    again = _spooler(tmp_path, fake)  # a restarted producer finds them
    assert again.pending() == 5
    later = again.publish("note.added", {"n": 99}, event_id="evt_later", account=ACCOUNT)
    assert [s[0] for s in fake.sent] == [*ids, later]  # spooled ones first, in order
    assert [s[2] for s in fake.sent[:5]] == data  # floats, text and surrogates intact
    assert again.pending() == 0
    again.close()


def test_new_events_queue_behind_the_spool_while_it_cannot_drain(tmp_path: Path) -> None:
    fake = FakePublisher()
    with _spooler(tmp_path, fake) as spool:
        fake.down = True
        spool.publish("a.b", {"n": 1}, event_id="evt_1", account=ACCOUNT)
        assert spool.flush() is None
        fake.down = False
        # The broker is back, but the first flush attempt happens on this call.
        spool.publish("a.b", {"n": 2}, event_id="evt_2", account=ACCOUNT)
        assert [s[0] for s in fake.sent] == ["evt_1", "evt_2"]
        assert spool.flush() == 0


def test_nacks_spool_too(tmp_path: Path) -> None:
    fake = FakePublisher()

    def nack(*_a: Any, **_k: Any) -> str:
        raise NackedError("queue full")

    with _spooler(tmp_path, fake) as spool:
        fake.publish = nack  # type: ignore[method-assign]
        spool.publish("a.b", {}, event_id="evt_n", account=ACCOUNT)
        assert spool.pending() == 1


def test_unroutable_spooled_events_move_aside_with_the_reason(tmp_path: Path) -> None:
    fake = FakePublisher()
    with _spooler(tmp_path, fake) as spool:
        fake.down = True
        spool.publish("gone.type", {"n": 1}, event_id="evt_gone", account=ACCOUNT)
        spool.publish("a.b", {"n": 2}, event_id="evt_ok", account=ACCOUNT)
        fake.down = False
        fake.unroutable = {"gone.type"}
        assert spool.flush() == 1
        assert [s[0] for s in fake.sent] == ["evt_ok"]
        [rejected] = spool.rejected()
        assert rejected["event_id"] == "evt_gone"
        assert "no queue for gone.type" in rejected["error"]
        # Fresh events the broker cannot route are the caller's to handle, as without a spool.
        with pytest.raises(UnroutableError):
            spool.publish("gone.type", {}, account=ACCOUNT)


def test_invalid_events_are_refused_not_spooled(tmp_path: Path) -> None:
    fake = FakePublisher()
    fake.down = True
    with _spooler(tmp_path, fake) as spool:
        with pytest.raises(PayloadError):
            spool.publish("Not A Type", {}, account=ACCOUNT)
        with pytest.raises(PayloadError):
            spool.publish("order.created", {"id": "missing the page's fields"}, account=ACCOUNT)
        with pytest.raises(PayloadError):
            spool.publish("a.b", {"x": float("nan")}, account=ACCOUNT)
        with pytest.raises(PayloadError):
            spool.publish("a.b", {}, event_id="has space", account=ACCOUNT)
        assert spool.pending() == 0


def test_spool_file_is_wal_and_the_same_id_is_spooled_once(tmp_path: Path) -> None:
    fake = FakePublisher()
    fake.down = True
    with _spooler(tmp_path, fake) as spool:
        spool.publish("a.b", {}, event_id="evt_same", account=ACCOUNT)
        spool.publish("a.b", {}, event_id="evt_same", account=ACCOUNT)  # a caller retrying
        assert spool.pending() == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "spool.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
