"""Which logged events resend and recover select (SQLite): isolation, filters, pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control.store.attempts import AttemptStore
from control.store.resend_selection import (
    EventFilter,
    EventKey,
    ResendScope,
    events_matching,
    events_to_recover,
    stored_events,
)
from wire.attempt_record import AttemptRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHOP = ResendScope("shop", "acme")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AttemptStore]:
    store = AttemptStore.open(f"sqlite:///{tmp_path / 'log.db'}", migrate=True)
    yield store
    store.close()


def attempt(event_id: str, number: int, minutes: float, **extra: Any) -> AttemptRecord:
    started = T0 + timedelta(minutes=minutes)
    fields: dict[str, Any] = {
        "event_id": event_id,
        "account": "acme",
        "endpoint_id": "shop",
        "event_type": "order.created",
        "attempt": number,
        "started_at": started,
        "ended_at": started + timedelta(milliseconds=30),
        "duration_seconds": 0.03,
        "outcome": "success",
        "status": 200,
        "disposition": "delivered",
        "body": b'{"event":"order.created","data":{"id":"%s"}}' % event_id.encode()
        if number == 1
        else None,
    }
    fields.update(extra)
    return AttemptRecord.model_validate(fields)


def failed(event_id: str, number: int, minutes: float, *, last: bool = False) -> AttemptRecord:
    return attempt(
        event_id,
        number,
        minutes,
        outcome="http_error",
        status=500,
        disposition="dead_lettered" if last else "retry",
        dead_letter_reason="exhausted" if last else None,
        next_attempt=None if last else number + 1,
    )


def ids(keys: list[EventKey]) -> list[str]:
    return [key.event_id for key in keys]


def test_only_the_endpoints_account_and_only_events_attempted_there(store: AttemptStore) -> None:
    store.write(
        [
            attempt("mine", 1, 0),
            attempt("elsewhere", 1, 1, endpoint_id="other-shop"),
            # Another account's event at this endpoint (it was an all-accounts sink once).
            attempt("theirs", 1, 2, account="globex"),
        ]
    )
    everything = EventFilter(since=T0 - timedelta(days=1))
    assert ids(events_matching(store.database, SHOP, everything)) == ["mine"]
    assert (
        ids(events_matching(store.database, SHOP, EventFilter(event_ids=frozenset({"theirs"}))))
        == []
    )
    sink = ResendScope("shop", "acme", all_accounts=True)
    assert ids(events_matching(store.database, sink, everything)) == ["mine", "theirs"]
    assert ids(events_matching(store.database, ResendScope("shop", "globex"), everything)) == [
        "theirs"
    ]


def test_every_filter_narrows_and_an_event_counts_once(store: AttemptStore) -> None:
    store.write(
        [
            failed("a", 1, 0),
            attempt("a", 2, 1),
            attempt("b", 1, 2, outcome="timeout", status=None, disposition="retry"),
            attempt("c", 1, 3),
            failed("d", 1, 10),
        ]
    )
    db = store.database

    def matching(**where: Any) -> list[str]:
        return ids(events_matching(db, SHOP, EventFilter(**where)))

    assert matching(status=500) == ["a", "d"]
    assert matching(outcome="timeout") == ["b"]
    assert matching(outcome="success") == ["a", "c"]
    assert matching(since=T0 + timedelta(minutes=2)) == ["b", "c", "d"]
    assert matching(until=T0 + timedelta(minutes=2)) == ["a"]
    assert matching(event_ids=frozenset({"c", "d", "nope"})) == ["c", "d"]
    assert matching(event_ids=frozenset({"a", "c"}), status=200) == ["a", "c"]


def test_pages_neither_skip_nor_repeat_events_sharing_a_first_attempt(
    store: AttemptStore,
) -> None:
    # Five events, three of them first attempted in the same microsecond.
    store.write([attempt(name, 1, 0) for name in ("e3", "e1", "e2")])
    store.write([attempt("e0", 1, -1), attempt("e4", 1, 5), attempt("e1", 2, 6)])
    seen: list[str] = []
    after = None
    for _ in range(10):
        page = events_matching(
            store.database, SHOP, EventFilter(since=T0 - timedelta(hours=1)), after=after, limit=2
        )
        seen += ids(page)
        if len(page) < 2:
            break
        after = page[-1]
    assert seen == ["e0", "e1", "e2", "e3", "e4"]


def test_recover_takes_what_failed_since_and_was_not_delivered_after(
    store: AttemptStore,
) -> None:
    since = T0
    store.write(
        [
            # Dead-lettered after three failures: recovered.
            failed("dead", 1, 1),
            failed("dead", 2, 2),
            failed("dead", 3, 3, last=True),
            # Failed, then delivered on its retry: not recovered.
            failed("healed", 1, 1),
            attempt("healed", 2, 2),
            # Failed before ``since`` only: not recovered.
            failed("old", 1, -10, last=True),
            # Delivered once, then resent and failing now: recovered.
            attempt("relapsed", 1, -5),
            failed("relapsed", 1, 4, last=True),
            # Delivered since, never failed: not recovered.
            attempt("fine", 1, 5),
            # Still retrying (its last attempt asked for another): recovered too.
            failed("retrying", 1, 6),
            # Another account's failure at this endpoint: never.
            attempt("theirs", 1, 1, account="globex", outcome="timeout", disposition="retry"),
            # A failure at another endpoint: never.
            failed("elsewhere", 1, 1).model_copy(update={"endpoint_id": "other"}),
        ]
    )
    found = events_to_recover(store.database, SHOP, since)
    assert ids(found) == ["dead", "relapsed", "retrying"]
    # Paged: the same events, a page at a time.
    first = events_to_recover(store.database, SHOP, since, limit=2)
    rest = events_to_recover(store.database, SHOP, since, after=first[-1], limit=2)
    assert ids(first) + ids(rest) == ["dead", "relapsed", "retrying"]
    # Later than the failures: nothing.
    assert events_to_recover(store.database, SHOP, T0 + timedelta(hours=1)) == []


def test_bodies_of_the_keys_asked_missing_ones_left_out(store: AttemptStore) -> None:
    store.write([attempt("kept", 1, 0), attempt("no-body", 2, 1)])
    keys = events_matching(store.database, SHOP, EventFilter(since=T0 - timedelta(days=1)))
    bodies = stored_events(store.database, keys)
    assert set(bodies) == {("acme", "kept")}
    assert bodies[("acme", "kept")].event_type == "order.created"
    assert b'"kept"' in bodies[("acme", "kept")].body
    assert stored_events(store.database, []) == {}


def test_bodies_only_of_the_pairs_asked_for(store: AttemptStore) -> None:
    store.write(
        [
            attempt("a", 1, 0),
            attempt("b", 1, 0),
            attempt("a", 1, 0, account="globex"),
            attempt("b", 1, 0, account="globex"),
        ]
    )
    keys = [EventKey(T0, "acme", "a"), EventKey(T0, "globex", "b")]
    assert set(stored_events(store.database, keys)) == {("acme", "a"), ("globex", "b")}
