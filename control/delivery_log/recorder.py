"""Attempt records from the delivery log queue into the store, in batches, acked after commit.

The recorder holds at most ``prefetch`` messages (batches of records) at a
time; it writes what it holds in one transaction, and the messages are acked
(by :class:`broker.queue_consumer.QueueConsumer`) only once that transaction
committed.  A recorder killed in between loses nothing: the broker hands the
messages out again and the store skips the records it already has.  While the
database is slow or down the recorder keeps retrying the same batch with
backoff and takes nothing more: the records wait in the broker, never in
memory, and workers are not affected (they only publish).  A message that is
not a valid batch is moved to ``webhooks.attempts.invalid`` (logged, counted),
never retried in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from broker.consumers import Message
from broker.queue_consumer import Connect, QueueConsumer, Settlement, open_connection
from broker.reconnect_backoff import Backoff
from broker.url import BrokerUrl
from config.errors import PayloadError, StoreUnavailableError
from config.topology import DELIVERY_LOG_QUEUE, delivery_log_topology
from control.delivery_log import metrics
from control.store.attempts import AttemptStore
from wire.attempt_record import AttemptRecord, decode_batch

log = structlog.get_logger("recorder")

_MAX_BACKOFF_SECONDS = 30.0
_TICK_SECONDS = 1.0


@dataclass(eq=False)
class _Held:
    """One message's records, and the settlement its handler waits for."""

    records: list[AttemptRecord]
    settled: asyncio.Future[Settlement]

    def settle(self, settlement: Settlement) -> None:
        # Done already when its handler was cancelled (the channel went away).
        if not self.settled.done():
            self.settled.set_result(settlement)


class Recorder:
    """Consumes the delivery log queue and writes its records to an AttemptStore."""

    def __init__(
        self,
        broker: BrokerUrl,
        store: AttemptStore,
        *,
        prefetch: int = 16,
        batch_records: int = 2000,
        linger_seconds: float = 0.2,
        retry_seconds: float = 1.0,
        drain_seconds: float = 10.0,
        connect: Connect = open_connection,
    ) -> None:
        self._store = store
        self._batch_records = batch_records
        self._linger = linger_seconds
        self._retry = retry_seconds
        self._consumer = QueueConsumer(
            broker,
            process="webhook-recorder",
            topology=delivery_log_topology(),
            queue=DELIVERY_LOG_QUEUE,
            prefetch=prefetch,
            handle=self._handle,
            on_ready=self._on_ready,
            drain_seconds=drain_seconds,
            backoff=Backoff(retry_seconds, _MAX_BACKOFF_SECONDS),
            connect=connect,
        )
        self._writing: list[_Held] = []
        self._pending: list[_Held] = []
        self._pending_records = 0
        self._arrived = asyncio.Event()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Stop taking records; what is held is written (or left to the broker), then return."""
        self._stop.set()
        self._arrived.set()
        self._consumer.request_stop()

    async def run(self) -> None:
        """Consume and record until :meth:`request_stop`; reconnects on its own."""
        background = [
            asyncio.ensure_future(self._write_loop()),
            asyncio.ensure_future(self._tick()),
        ]
        try:
            await self._consumer.run()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def connected(self) -> bool:
        """Connected and consuming the log's queue."""
        return self._consumer.ready

    def _on_ready(self, ready: bool) -> None:
        if ready:
            log.info("recorder_consuming", queue=DELIVERY_LOG_QUEUE, store=repr(self._store))

    async def _handle(self, message: Message) -> Settlement:
        """Hold the message's records until a transaction with them commits."""
        try:
            records = decode_batch(message.body)
        except PayloadError as exc:
            log.error("attempt_batch_invalid", error=str(exc), moved_to="webhooks.attempts.invalid")
            metrics.RECORDS.labels("invalid").inc()
            return Settlement.DEAD_LETTER
        held = _Held(records, asyncio.get_running_loop().create_future())
        self._pending.append(held)
        self._pending_records += len(records)
        self._arrived.set()
        try:
            return await held.settled
        finally:
            if held in self._pending:  # cancelled before the writer took it
                self._pending.remove(held)
                self._pending_records -= len(records)

    async def _tick(self) -> None:
        """Keep the lag gauge current while a write waits for the database."""
        while True:
            metrics.LAG.set(max(self._oldest_age(self._writing), self._oldest_age(self._pending)))
            await asyncio.sleep(_TICK_SECONDS)

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self._pending_records < self._batch_records and not self._stop.is_set():
                await asyncio.sleep(self._linger)  # let a batch fill up
            await self._write(self._take())

    def _take(self) -> list[_Held]:
        taken: list[_Held] = []
        count = 0
        while self._pending:
            if taken and count + len(self._pending[0].records) > self._batch_records:
                break
            held = self._pending.pop(0)
            taken.append(held)
            count += len(held.records)
        self._pending_records -= count
        return taken

    async def _write(self, taken: list[_Held]) -> None:
        """Write ``taken`` until it commits; on a stop or a lost channel the broker keeps it."""
        backoff = self._retry
        reported = False
        self._writing = taken
        try:
            while True:
                taken[:] = [held for held in taken if not held.settled.done()]
                if not taken:
                    return  # written, or given back to the broker with the channel
                try:
                    try:
                        await self._commit(taken)
                    except StoreUnavailableError:
                        raise
                    except Exception as exc:
                        # Not the database being away: some record it cannot take.
                        log.error("recorder_write_failed", error=str(exc), messages=len(taken))
                        await self._write_one_by_one(taken)
                except StoreUnavailableError as exc:
                    metrics.STORE_AVAILABLE.set(0)
                    if not reported:
                        log.warning("recorder_store_unavailable", error=str(exc), retrying=True)
                        reported = True
                    if self._stop.is_set():
                        for held in taken:
                            held.settle(Settlement.REQUEUE)  # the broker keeps them
                        return
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                    continue
                metrics.STORE_AVAILABLE.set(1)
                if reported:
                    log.info("recorder_store_available")
        finally:
            self._writing = []

    async def _commit(self, taken: list[_Held]) -> None:
        """One transaction for everything in ``taken``; acked (and removed from it) after."""
        records = [record for held in taken for record in held.records]
        started = time.monotonic()
        written = await asyncio.to_thread(self._store.write, records)
        metrics.WRITE_DURATION.observe(time.monotonic() - started)
        for held in taken:
            held.settle(Settlement.ACK)
        taken.clear()
        metrics.RECORDS.labels("written").inc(written)
        metrics.RECORDS.labels("duplicate").inc(len(records) - written)

    async def _write_one_by_one(self, taken: list[_Held]) -> None:
        """Each message in its own transaction; one the store refuses goes to the invalid queue."""
        while taken:
            held = taken[0]
            try:
                await self._commit([held])
            except StoreUnavailableError:
                raise  # the rest stays in ``taken``, for the retry
            except Exception as exc:  # a StoreError, or a record nobody foresaw
                log.error(
                    "attempt_batch_refused_by_store",
                    error=str(exc),
                    records=len(held.records),
                    moved_to="webhooks.attempts.invalid",
                )
                metrics.RECORDS.labels("invalid").inc(len(held.records))
                held.settle(Settlement.DEAD_LETTER)
            taken.pop(0)

    @staticmethod
    def _oldest_age(held: Sequence[_Held]) -> float:
        oldest = min((r.ended_at.timestamp() for h in held[:1] for r in h.records), default=None)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
