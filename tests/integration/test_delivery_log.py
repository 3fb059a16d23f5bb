"""The delivery log end to end: workers publish attempt records, the recorder stores them.

On a real broker and both databases (SQLite, and PostgreSQL from the session's
``postgres_url``: a database of its own per test).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
from aiohttp import web

from broker.declarer import apply_topology
from broker.url import BrokerUrl
from cli.dlq import main as dlq_main
from config.errors import InvalidInputError, StoreError
from config.topology import (
    DELIVERY_LOG_EXCHANGE,
    DELIVERY_LOG_INVALID_QUEUE,
    delivery_log_topology,
)
from control.dead_letters.filters import Filters
from control.dead_letters.replay import replay
from control.delivery_log import metrics as recorder_metrics
from control.delivery_log.recorder import Recorder
from control.delivery_log.retention import Retention
from control.store import database as store_database
from control.store.attempt_listing import AttemptFilter, list_attempts
from control.store.attempts import AttemptStore
from devtools.rabbitmq_inspection import management_api
from tests.support.amqp import depth
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    SECRET,
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
)
from wire.attempt_record import AttemptRecord, encode_batch


@pytest.fixture
def store(database_url: str) -> Iterator[AttemptStore]:
    store = AttemptStore.open(database_url, migrate=True)
    yield store
    store.close()


@asynccontextmanager
async def running_recorder(
    url: str, store: AttemptStore, **options: Any
) -> AsyncIterator[Recorder]:
    """A recorder consuming the delivery log queue of ``url``; stopped cleanly on exit."""
    options.setdefault("linger_seconds", 0.02)
    recorder = Recorder(BrokerUrl.parse(url), store, **options)
    task = asyncio.create_task(recorder.run())
    try:
        await wait_until(lambda: recorder.connected, 30, "recorder consuming")
        yield recorder
    finally:
        recorder.request_stop()
        await asyncio.wait_for(task, timeout=30)


def record(event_id: str, attempt: int, started_at: datetime, **extra: Any) -> AttemptRecord:
    fields: dict[str, Any] = {
        "event_id": event_id,
        "account": "acme",
        "endpoint_id": "shop",
        "event_type": "order.created",
        "attempt": attempt,
        "started_at": started_at,
        "ended_at": started_at + timedelta(milliseconds=20),
        "duration_seconds": 0.02,
        "outcome": "success",
        "status": 200,
        "disposition": "delivered",
        "body": b'{"id":"%s"}' % event_id.encode() if attempt == 1 else None,
    }
    fields.update(extra)
    return AttemptRecord.model_validate(fields)


def publish_batches(url: str, batches: list[list[AttemptRecord]]) -> None:
    """Publish batches to the delivery log as a worker does (persistent, confirmed)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        apply_topology(channel, delivery_log_topology())
        channel.confirm_delivery()
        for batch in batches:
            channel.basic_publish(
                DELIVERY_LOG_EXCHANGE,
                "",
                encode_batch(batch),
                pika.BasicProperties(delivery_mode=2),
                mandatory=True,
            )
    finally:
        connection.close()


def counted(name: str, **labels: str) -> float:
    metric = getattr(recorder_metrics, name)
    child = metric.labels(**labels) if labels else metric
    return float(child._value.get())


# ------------------------------------------------------------------- end to end


async def test_every_attempt_of_a_retried_dead_lettered_and_replayed_event_in_order(
    vhost_url: str,
    database_url: str,
    store: AttemptStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = True

    def respond(request: Received) -> web.Response:
        if failing and b'"o0"' in request.body:
            return web.Response(
                status=500,
                text=f"signature mismatch, expected with {SECRET}",
                headers={"X-Request-Id": f"req-{request.attempt}", "Set-Cookie": "session=1"},
            )
        return web.json_response({"ok": True})

    receiver = await Receiver(respond).start()
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url)], delays=(0.2, 0.2))
    settings = settings.model_copy(update={"delivery_log": True})
    try:
        async with (
            running_worker(settings),
            running_recorder(vhost_url, store),
        ):
            failed_id, delivered_id = publish_orders(vhost_url, 2)
            await wait_until(
                lambda: (
                    len(store.attempts_of_event(failed_id)) == 3
                    and len(store.attempts_of_event(delivered_id)) == 1
                ),
                30,
                "four attempts recorded",
            )
            attempts = [a.record for a in store.attempts_of_event(failed_id)]
            assert [a.attempt for a in attempts] == [1, 2, 3]
            assert [a.disposition for a in attempts] == ["retry", "retry", "dead_lettered"]
            assert [a.next_attempt for a in attempts] == [2, 3, None]
            assert attempts[2].dead_letter_reason == "exhausted"
            assert all(a.status == 500 and a.outcome == "http_error" for a in attempts)
            assert all(a.endpoint_id == "shop" and a.account == "acme" for a in attempts)
            starts = [a.started_at for a in attempts]
            assert starts == sorted(starts) and all(a.ended_at >= a.started_at for a in attempts)
            for number, attempt in enumerate(attempts, start=1):
                assert attempt.response_excerpt == b"signature mismatch, expected with ***"
                assert attempt.response_headers["x-request-id"] == f"req-{number}"
                assert "set-cookie" not in attempt.response_headers
            [delivered] = [a.record for a in store.attempts_of_event(delivered_id)]
            assert (delivered.status, delivered.disposition) == (200, "delivered")
            assert delivered.response_excerpt == b'{"ok": true}'
            sent = {r.event_id: r.body for r in receiver.requests}
            assert store.event_body("acme", failed_id) == sent[failed_id]
            assert store.event_body("acme", delivered_id) == sent[delivered_id]

            # `webhook-dlq show` prints the dead letter's attempts from the log.
            monkeypatch.setenv("RABBITMQ_URL", vhost_url)
            monkeypatch.setenv("DATABASE_URL", database_url)
            capsys.readouterr()
            assert (
                await asyncio.to_thread(
                    dlq_main, ["show", "--queue", "webhooks.shop.dlq", failed_id]
                )
                == 0
            )
            shown = capsys.readouterr().out
            assert "attempt history (delivery log):" in shown
            for line in ("#1  ", "#2  ", "#3  ", "retry -> attempt 2", "dead_lettered (exhausted)"):
                assert line in shown
            assert shown.count("answer: signature mismatch, expected with ***") == 3
            assert SECRET not in shown
            show_json = ["show", "--queue", "webhooks.shop.dlq", "--format", "json", failed_id]
            assert await asyncio.to_thread(dlq_main, show_json) == 0
            [letter] = json.loads(capsys.readouterr().out)
            history = letter["attempt_history"]
            assert [(h["attempt"], h["status"]) for h in history] == [(1, 500), (2, 500), (3, 500)]
            assert history[0]["response_headers"]["x-request-id"] == "req-1"

            # Replayed, the dead letter starts again at attempt 1: a row of its own.
            failing = False
            moved = await asyncio.to_thread(
                replay, settings.broker, ["shop"], Filters(event="order.created")
            )
            assert len(moved.moved) == 1
            await wait_until(
                lambda: len(store.attempts_of_event(failed_id)) == 4, 30, "replay recorded"
            )
            again = store.attempts_of_event(failed_id)[3].record
            assert (again.attempt, again.disposition, again.status) == (1, "delivered", 200)
            assert store.event_body("acme", failed_id) == sent[failed_id]
    finally:
        await receiver.stop()


async def test_written_twice_counts_once(vhost_url: str, store: AttemptStore) -> None:
    """A batch delivered again (its recorder died before the ack) adds nothing."""
    start = datetime.now(UTC)
    batch = [record(f"e{i}", 1, start + timedelta(seconds=i)) for i in range(50)]
    duplicates = counted("RECORDS", result="duplicate")
    async with running_recorder(vhost_url, store):
        await asyncio.to_thread(publish_batches, vhost_url, [batch, batch, batch[:10]])
        await wait_until(
            lambda: counted("RECORDS", result="duplicate") - duplicates == 60, 30, "duplicates seen"
        )
    assert store.kept().attempts == 50
    assert depth(vhost_url, "webhooks.attempts") == 0


async def test_an_invalid_batch_goes_to_the_invalid_queue_once(
    vhost_url: str, store: AttemptStore
) -> None:
    start = datetime.now(UTC)
    async with running_recorder(vhost_url, store):
        connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
        try:
            connection.channel().basic_publish(DELIVERY_LOG_EXCHANGE, "", b"{not json")
        finally:
            connection.close()
        await asyncio.to_thread(publish_batches, vhost_url, [[record("ok", 1, start)]])
        await wait_until(lambda: store.kept().attempts == 1, 30, "valid batch recorded")
        await wait_until(
            lambda: depth(vhost_url, DELIVERY_LOG_INVALID_QUEUE) == 1, 30, "invalid batch moved"
        )
    assert depth(vhost_url, "webhooks.attempts") == 0


# --------------------------------------------------------- the database away


async def test_deliveries_go_on_while_the_database_is_down_and_nothing_is_lost(
    vhost_url: str, database_url: str, store: AttemptStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down: deliveries unaffected, records wait in the broker, lag shows; back: all written."""
    monkeypatch.setattr(store_database, "SQLITE_BUSY_SECONDS", 0.2)
    monkeypatch.setattr(store_database, "POSTGRES_CONNECT_SECONDS", 1)
    outage = DatabaseOutage(database_url)
    recording = AttemptStore.open(outage.url)
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url)])
    settings = settings.model_copy(update={"delivery_log": True})
    try:
        async with (
            running_worker(settings),
            running_recorder(vhost_url, recording, retry_seconds=0.1),
        ):
            outage.begin()
            started = time.monotonic()
            ids = await asyncio.to_thread(publish_orders, vhost_url, 30)
            await receiver.wait_for(lambda got: len(got) == 30, timeout=30)
            delivered_in = time.monotonic() - started
            await wait_until(
                lambda: counted("STORE_AVAILABLE") == 0 and counted("LAG") > 0.5,
                30,
                "the recorder reports the outage and its lag",
            )
            assert store_rows_or_none(store) in (None, 0)
            outage.end()
            await wait_until(lambda: store.kept().attempts == 30, 60, "every record written")
        assert {a.record.event_id for i in ids for a in store.attempts_of_event(i)} == set(ids)
        assert counted("STORE_AVAILABLE") == 1
        assert delivered_in < 20  # the 30 deliveries never waited for the log
    finally:
        outage.end()
        recording.close()
        await receiver.stop()


def store_rows_or_none(store: AttemptStore) -> int | None:
    """Rows in the log, or None while the test holds SQLite's write lock."""
    try:
        return store.kept().attempts
    except Exception:
        return None


class DatabaseOutage:
    """Makes the database unusable for the recorder: PostgreSQL behind a proxy that is cut,
    SQLite write-locked by another connection."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy.engine import make_url

        from tests.support.tcp_proxy import TcpProxy

        self._sqlite = database_url.startswith("sqlite")
        self._lock: Any = None
        self._down = False
        self._proxy: TcpProxy | None = None
        self.url = database_url
        if not self._sqlite:
            parsed = make_url(database_url)
            self._proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432).start()
            self.url = parsed.set(host="127.0.0.1", port=self._proxy.port).render_as_string(
                hide_password=False
            )
        self._path = database_url.removeprefix("sqlite:///")

    def begin(self) -> None:
        self._down = True
        if self._proxy is not None:
            self._proxy.cut()
            return
        import sqlite3

        self._lock = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        self._lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if not self._down:
            return
        self._down = False
        if self._proxy is not None:
            self._proxy.restore()
        elif self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None


# ------------------------------------------------------- the recorder killed


def _rows(store: AttemptStore) -> int:
    return store.kept().attempts


async def test_records_survive_recorder_sigkills_mid_batch(
    vhost_url: str, database_url: str, store: AttemptStore, tmp_path: Path
) -> None:
    """SIGKILLed twice while writing a backlog: every record once, none lost or doubled."""
    total, per_batch = 12_000, 250
    start = datetime.now(UTC) - timedelta(hours=1)
    records = [
        record(f"k{i}", 1 + i % 3, start + timedelta(milliseconds=i), response_excerpt=b"x" * 200)
        for i in range(total)
    ]
    batches = [records[i : i + per_batch] for i in range(0, total, per_batch)]
    await asyncio.to_thread(publish_batches, vhost_url, batches)
    env = {
        **os.environ,
        "RABBITMQ_URL": vhost_url,
        "DATABASE_URL": database_url,
        "RECORDER_METRICS_PORT": "0",
        "LOG_FORMAT": "json",
    }
    log_path = tmp_path / "recorder.log"
    kills = 0
    for stop_above in (1_000, 3_000, None):
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "control.delivery_log",
                env=env,
                stdout=log_file,
                stderr=log_file,
            )
        try:
            if stop_above is None:
                await wait_until(lambda: _rows(store) == total, 60, "the backlog written")
                break
            floor = _rows(store)
            await wait_until(
                lambda floor=floor, above=stop_above: _rows(store) > max(floor, above),
                60,
                "the recorder writing",
                interval=0.02,
            )
            assert _rows(store) < total, "the backlog went in before the kill: make it larger"
            process.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            if process.returncode is None and stop_above is None:
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=30)
    assert kills == 2
    assert process.returncode == 0, log_path.read_text()[-2000:]
    assert _rows(store) == total
    assert depth(vhost_url, "webhooks.attempts") == 0
    keys = {(a.record.attempt, a.record.started_at) for a in store.attempts_of_event("k7")}
    assert keys == {(2, start + timedelta(milliseconds=7))}


# ------------------------------------------------------------------ retention


async def test_retention_deletes_exactly_what_is_older_than_the_cutoff(
    store: AttemptStore,
) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    cutoff = now - timedelta(days=7)
    old = [record(f"old{i}", 1, cutoff - timedelta(minutes=i + 1)) for i in range(7)]
    edge = record("edge", 1, cutoff)  # exactly at the cut-off: kept
    fresh = [record(f"new{i}", 1, cutoff + timedelta(minutes=i + 1)) for i in range(3)]
    # An event first sent before the cut-off and retried after it: its old attempt
    # goes, its body stays with the attempt that is kept.
    straddling = [
        record("retried", 1, cutoff - timedelta(hours=1), disposition="retry", next_attempt=2),
        record("retried", 2, cutoff + timedelta(hours=1)),
    ]
    store.write([*old, edge, *fresh, *straddling])
    deleted = counted("DELETED", table="attempts")
    retention = Retention(store, timedelta(days=7), batch_rows=3, clock=lambda: now)
    done = await retention.run_once()
    assert (done.cutoff, done.attempts, done.bodies) == (cutoff, 8, 7)
    assert counted("DELETED", table="attempts") - deleted == 8
    kept = {
        (a.record.event_id, a.record.attempt)
        for e in ("edge", "new0", "new1", "new2", "retried")
        for a in store.attempts_of_event(e)
    }
    assert kept == {("edge", 1), ("new0", 1), ("new1", 1), ("new2", 1), ("retried", 2)}
    assert all(store.attempts_of_event(f"old{i}") == [] for i in range(7))
    assert all(store.event_body("acme", f"old{i}") is None for i in range(7))
    assert store.event_body("acme", "retried") == b'{"id":"retried"}'
    assert store.event_body("acme", "edge") is not None
    assert (counted("KEPT_ATTEMPTS"), counted("KEPT_BODIES")) == (5, 5)
    assert counted("OLDEST_ATTEMPT_AGE") == timedelta(days=7).total_seconds()
    again = await retention.run_once()
    assert (again.attempts, again.bodies) == (0, 0)


# ------------------------------------------------------ the broker pushing back


def worker_counted(metric: Any, *labels: str) -> float:
    child = metric.labels(*labels) if labels else metric
    return float(child._value.get())


async def test_a_full_log_queue_never_holds_deliveries_back_and_loses_nothing(
    vhost_url: str, store: AttemptStore, rabbitmq_broker: Any
) -> None:
    """The log queue refuses batches (a two-message cap): deliveries go on, the records
    wait in the worker's buffer, and all arrive once a recorder makes room."""
    from worker import metrics as worker_metrics

    if rabbitmq_broker.management_url is None:
        pytest.skip("needs the broker's management API to set a queue policy")
    user, password = rabbitmq_broker.credentials()
    vhost = vhost_url.rsplit("/", 1)[1]
    management_api(
        rabbitmq_broker.management_url,
        "PUT",
        f"policies/{vhost}/tiny-log",
        {"pattern": "^webhooks\\.attempts$", "definition": {"max-length": 2}, "apply-to": "queues"},
        user=user,
        password=password,
    )
    refused = worker_counted(worker_metrics.DELIVERY_LOG_REFUSED)
    published = worker_counted(worker_metrics.DELIVERY_LOG_PUBLISHED)
    dropped = worker_counted(worker_metrics.DELIVERY_LOG_DROPPED, "buffer_full")
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url)])
    settings = settings.model_copy(update={"delivery_log": True})
    try:
        async with running_worker(settings) as worker:
            for round_ in range(6):  # separate batches, more than the queue takes
                await asyncio.to_thread(publish_orders, vhost_url, 5, f"r{round_}-")
                await receiver.wait_for(lambda got, n=round_: len(got) == 5 * (n + 1), 30)
                await asyncio.sleep(0.1)
            await wait_until(
                lambda: worker_counted(worker_metrics.DELIVERY_LOG_REFUSED) > refused,
                30,
                "a batch refused",
            )
            assert worker.in_flight == 0
            held = worker_counted(worker_metrics.DELIVERY_LOG_BUFFERED)
            assert held > 0, "every record got in: the cap did not push back"
            assert worker_counted(worker_metrics.DELIVERY_LOG_PUBLISHED) - published == 30 - held
            async with running_recorder(vhost_url, store):
                await wait_until(lambda: store.kept().attempts == 30, 60, "every record written")
    finally:
        await receiver.stop()
    assert worker_counted(worker_metrics.DELIVERY_LOG_DROPPED, "buffer_full") == dropped
    assert {r.event_id for r in receiver.requests} == {
        a.record.event_id for r in receiver.requests for a in store.attempts_of_event(r.event_id)
    }


class PickyStore(AttemptStore):
    """A store that refuses any write holding the record ``refused`` (as a constraint would)."""

    def write(self, records: Any) -> int:
        if any(r.event_id == "refused" for r in records):
            raise StoreError("the write conflicts with stored data: value too long")
        return super().write(records)


async def test_a_batch_the_store_refuses_is_set_aside_and_the_others_written(
    vhost_url: str, database_url: str
) -> None:
    picky = PickyStore(AttemptStore.open(database_url, migrate=True).database)
    start = datetime.now(UTC)
    good = [record(f"g{i}", 1, start) for i in range(3)]
    try:
        async with running_recorder(vhost_url, picky, linger_seconds=0.3):
            await asyncio.to_thread(
                publish_batches,
                vhost_url,
                [good[:2], [record("refused", 1, start)], good[2:]],
            )
            await wait_until(lambda: picky.kept().attempts == 3, 30, "the good records written")
            await wait_until(
                lambda: depth(vhost_url, DELIVERY_LOG_INVALID_QUEUE) == 1, 30, "refused one moved"
            )
        assert depth(vhost_url, "webhooks.attempts") == 0
    finally:
        picky.close()


# ------------------------------------------------------------------ listing


def test_pages_of_attempts_newest_first_with_every_filter(store: AttemptStore) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    same_moment = start + timedelta(hours=5)
    rows = [
        record(f"e{i}", 1, start + timedelta(hours=i), endpoint_id=f"ep{i % 2}") for i in range(5)
    ]
    rows += [
        record(
            "late",
            1,
            same_moment,
            outcome="timeout",
            status=None,
            disposition="retry",
            endpoint_id="ep0",
        ),
        record("late", 2, same_moment, status=503, outcome="http_error", endpoint_id="ep1"),
        record("other", 1, same_moment, account="globex"),
    ]
    store.write(rows)
    seen, cursor, pages = [], None, 0
    while pages < 10:
        page = list_attempts(store.database, AttemptFilter(account="acme"), limit=3, cursor=cursor)
        seen += [(a.record.event_id, a.record.attempt) for a in page.attempts]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    # Two rows share the newest start time: both listed once, the later row first.
    assert seen == [("late", 2), ("late", 1), ("e4", 1), ("e3", 1), ("e2", 1), ("e1", 1), ("e0", 1)]

    def ids(**where: Any) -> list[tuple[str, int]]:
        page = list_attempts(store.database, AttemptFilter(**where), limit=100)
        return [(a.record.event_id, a.record.attempt) for a in page.attempts]

    assert ids(endpoint_ids=["ep0"], account="acme") == [
        ("late", 1),
        ("e4", 1),
        ("e2", 1),
        ("e0", 1),
    ]
    assert ids(event_id="late") == [("late", 2), ("late", 1)]
    assert ids(outcome="timeout") == [("late", 1)]
    assert ids(status=503) == [("late", 2)]
    assert ids(account="globex") == [("other", 1)]
    window = {"since": start + timedelta(hours=1), "until": start + timedelta(hours=3)}
    assert ids(account="acme", **window) == [("e2", 1), ("e1", 1)]
    with pytest.raises(InvalidInputError, match="cursor"):
        list_attempts(store.database, AttemptFilter(), cursor="bm9wZQ")
    with pytest.raises(InvalidInputError, match="limit"):
        list_attempts(store.database, AttemptFilter(), limit=0)


async def test_webhook_api_can_run_the_recorder(vhost_url: str, tmp_path: Path) -> None:
    from devtools.local_processes import free_ports
    from tests.support.api_process import ApiProcess

    database = f"sqlite:///{tmp_path / 'api.db'}"
    api = ApiProcess(
        tmp_path / "api.log",
        RABBITMQ_URL=vhost_url,
        DATABASE_URL=database,
        API_RUN_RECORDER="true",
        RECORDER_METRICS_PORT=str(free_ports(1)[0]),
    )
    await asyncio.to_thread(api.start)
    store = AttemptStore.open(database)
    try:
        start = datetime.now(UTC)
        batch = [record(f"api{i}", 1, start + timedelta(seconds=i)) for i in range(20)]
        await asyncio.to_thread(publish_batches, vhost_url, [batch])
        await wait_until(lambda: store.kept().attempts == 20, 30, "recorded by webhook-api")
    finally:
        code = await asyncio.to_thread(api.terminate)
        store.close()
    assert code == 0, api.log()[-3000:]
    assert '"recorder_stopped"' in api.log()
