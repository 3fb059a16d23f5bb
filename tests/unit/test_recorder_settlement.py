"""control.delivery_log.recorder on the shared consume loop: a batch is acked only after
its commit, dead-lettered when unusable, and given back while the database is away.

A fake broker (tests/support/fake_amqp.py) and a fake store stand in for
RabbitMQ and the database; tests/integration/test_delivery_log.py runs the
same recorder against real ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from broker.url import BrokerUrl
from config.errors import StoreError, StoreUnavailableError
from config.topology import DELIVERY_LOG_QUEUE, delivery_log_topology
from control.delivery_log.recorder import Recorder
from tests.support.fake_amqp import Broker, FakeChannel
from wire.attempt_record import AttemptRecord, encode_batch

STARTED = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def record(event_id: str, attempt: int = 1) -> AttemptRecord:
    return AttemptRecord.model_validate(
        {
            "event_id": event_id,
            "account": "acme",
            "endpoint_id": "shop",
            "event_type": "order.created",
            "attempt": attempt,
            "started_at": STARTED,
            "ended_at": STARTED + timedelta(milliseconds=20),
            "duration_seconds": 0.02,
            "outcome": "success",
            "status": 200,
            "disposition": "delivered",
        }
    )


class FakeStore:
    """Keeps records by (event id, attempt), like the unique key; can be down or refuse."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], AttemptRecord] = {}
        self.writes = 0
        self.down = False
        self.refused: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def write(self, records: Sequence[AttemptRecord]) -> int:
        self.writes += 1
        self.gate.wait(10)
        if self.down:
            raise StoreUnavailableError("the database does not answer")
        if any(r.event_id in self.refused for r in records):
            raise StoreError("value too long for the column")
        new = [r for r in records if (r.event_id, r.attempt) not in self.rows]
        self.rows.update({(r.event_id, r.attempt): r for r in new})
        return len(new)


@asynccontextmanager
async def running(store: FakeStore, *channels: FakeChannel) -> AsyncIterator[Recorder]:
    broker = Broker(*channels)
    recorder = Recorder(
        BrokerUrl.parse("amqp://127.0.0.1:1/%2F"),
        cast(Any, store),
        linger_seconds=0.01,
        retry_seconds=0.02,
        drain_seconds=2.0,
        connect=broker.connect,
    )
    task = asyncio.create_task(recorder.run())
    try:
        await until(lambda: recorder.connected, "consuming")
        assert channels[0].declared == [delivery_log_topology()]
        assert channels[0].consumed == [(DELIVERY_LOG_QUEUE, 16)]
        yield recorder
    finally:
        recorder.request_stop()
        await asyncio.wait_for(task, 5)


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_batches_are_acked_only_once_their_transaction_committed() -> None:
    store, channel = FakeStore(), FakeChannel()
    store.gate.clear()  # the commit hangs until the test lets it finish
    async with running(store, channel):
        channel.deliver(encode_batch([record("evt_1"), record("evt_1", 2)]))
        channel.deliver(encode_batch([record("evt_2")]))
        await until(lambda: store.writes == 1, "the write under way")
        await asyncio.sleep(0.05)
        assert channel.settled == [] and store.rows == {}
        store.gate.set()
        await until(lambda: len(channel.settled) == 2, "both acked")
        assert channel.settled == [(1, "ack"), (2, "ack")]
        assert len(store.rows) == 3 and store.writes == 1  # one transaction for both


async def test_an_unreadable_batch_is_dead_lettered_without_a_write() -> None:
    store, channel = FakeStore(), FakeChannel()
    async with running(store, channel):
        channel.deliver(b"not a batch of attempt records")
        await until(lambda: bool(channel.settled), "settled")
        assert channel.settled == [(1, "reject")] and store.writes == 0


async def test_a_batch_the_store_refuses_is_dead_lettered_alone() -> None:
    store, channel = FakeStore(), FakeChannel()
    store.refused.add("evt_bad")
    store.gate.clear()  # both batches in one transaction
    async with running(store, channel):
        channel.deliver(encode_batch([record("evt_ok")]))
        channel.deliver(encode_batch([record("evt_bad")]))
        await until(lambda: store.writes == 1, "the first write")
        await asyncio.sleep(0.05)
        store.gate.set()
        await until(lambda: len(channel.settled) == 2, "both settled")
        assert sorted(channel.settled) == [(1, "ack"), (2, "reject")]
        assert set(store.rows) == {("evt_ok", 1)}


async def test_while_the_database_is_down_nothing_is_acked_and_a_stop_gives_it_back() -> None:
    store, channel = FakeStore(), FakeChannel()
    store.down = True
    async with running(store, channel) as recorder:
        channel.deliver(encode_batch([record("evt_1")]))
        await until(lambda: store.writes >= 3, "retries")
        assert channel.settled == []
        started = time.monotonic()
        recorder.request_stop()
        await until(lambda: not recorder.connected and bool(channel.settled), "given back")
        assert time.monotonic() - started < 2  # not the whole drain deadline
    assert channel.settled == [(1, "requeue")] and store.rows == {}


async def test_a_lost_channel_ends_the_retries_of_what_it_carried() -> None:
    store, first, second = FakeStore(), FakeChannel(), FakeChannel()
    store.down = True
    async with running(store, first, second):
        first.deliver(encode_batch([record("evt_1")]))
        await until(lambda: store.writes >= 2, "retries")
        first.lose()
        await until(lambda: second.consumed != [], "consuming again")
        await asyncio.sleep(0.1)  # at most the write under way finishes
        writes = store.writes
        await asyncio.sleep(0.2)
        assert store.writes <= writes + 1 and first.settled == []
        # The broker hands the batch out again on the new channel.
        store.down = False
        second.deliver(encode_batch([record("evt_1")]))
        await until(lambda: bool(second.settled), "written")
        assert second.settled == [(1, "ack")] and set(store.rows) == {("evt_1", 1)}
