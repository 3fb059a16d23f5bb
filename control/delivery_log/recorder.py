"""Attempt records from the delivery log queue into the store, in batches, acked after commit.

The recorder holds at most ``prefetch`` messages (batches of records) at a
time; it writes what it holds in one transaction and acks those messages only
once that transaction committed.  A recorder killed in between loses nothing:
the broker hands the messages out again and the store skips the records it
already has.  While the database is slow or down the recorder keeps retrying
the same batch with backoff and takes nothing more: the records wait in the
broker, never in memory, and workers are not affected (they only publish).
A message that is not a valid batch is moved to ``webhooks.attempts.invalid``
(logged, counted), never retried in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import structlog

from broker.async_channel import AmqpChannel, Message
from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, PayloadError, StoreUnavailableError
from config.topology import DELIVERY_LOG_QUEUE, delivery_log_topology
from control.delivery_log import metrics
from control.store.attempts import AttemptStore
from wire.attempt_record import AttemptRecord, decode_batch

log = structlog.get_logger("recorder")

_MAX_BACKOFF_SECONDS = 30.0
_TICK_SECONDS = 1.0


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
    ) -> None:
        self._broker = broker
        self._store = store
        self._prefetch = prefetch
        self._batch_records = batch_records
        self._linger = linger_seconds
        self._retry = retry_seconds
        self._drain_seconds = drain_seconds
        self._writing: list[tuple[Message, list[AttemptRecord]]] = []
        self._pending: list[tuple[Message, list[AttemptRecord]]] = []
        self._pending_records = 0
        self._arrived = asyncio.Event()
        self._stop = asyncio.Event()
        self.connected = False

    def request_stop(self) -> None:
        """Stop taking records; what is held is written (or left to the broker), then return."""
        self._stop.set()
        self._arrived.set()

    async def run(self) -> None:
        """Consume and record until :meth:`request_stop`; reconnects on its own."""
        name = f"webhook-recorder {socket.gethostname()} pid {os.getpid()}"
        backoff = self._retry
        while not self._stop.is_set():
            try:
                connection = await AmqpConnection.open(self._broker, name=name)
            except BrokerError as exc:
                log.warning("recorder_broker_unavailable", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = self._retry
            try:
                await self._serve(connection)
            except BrokerError as exc:
                log.warning("recorder_broker_lost", error=str(exc))
                await self._sleep(self._retry)
            finally:
                self.connected = False
                self._pending.clear()  # unacked: the broker hands them out again
                self._pending_records = 0
                await connection.close()

    async def _serve(self, connection: AmqpConnection) -> None:
        channel = await connection.channel()
        await channel.declare(delivery_log_topology())
        tag = await channel.consume(DELIVERY_LOG_QUEUE, self._received, prefetch=self._prefetch)
        self.connected = True
        log.info("recorder_consuming", queue=DELIVERY_LOG_QUEUE, store=repr(self._store))
        writer = asyncio.ensure_future(self._write_loop(channel))
        stop = asyncio.ensure_future(self._stop.wait())
        ticker = asyncio.ensure_future(self._tick())
        try:
            watched: set[asyncio.Future[Any]] = {
                writer,
                stop,
                connection.closed,
                channel.closed,
                channel.cancelled_by_broker,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set() and channel.is_open and not writer.done():
                # Take nothing more; write what is held, then ack it before closing.
                with contextlib.suppress(BrokerError):
                    await channel.cancel(tag)
                self._arrived.set()
                draining: set[asyncio.Future[Any]] = {writer, channel.closed}
                await asyncio.wait(draining, timeout=self._drain_seconds)
                channel.flush_acks()
        finally:
            for task in (stop, ticker, writer):
                task.cancel()
            for task in (ticker, writer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._stop.is_set():
            return
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            raise writer.exception()  # type: ignore[misc]
        reason = next((f.result() for f in (connection.closed, channel.closed) if f.done()), None)
        raise BrokerError(f"delivery log channel lost: {reason!r}")

    async def _tick(self) -> None:
        """Keep the lag gauge current while a write waits for the database."""
        while True:
            metrics.LAG.set(max(self._oldest_age(self._writing), self._oldest_age(self._pending)))
            await asyncio.sleep(_TICK_SECONDS)

    def _received(self, message: Message) -> None:
        try:
            records = decode_batch(message.body)
        except PayloadError as exc:
            log.error("attempt_batch_invalid", error=str(exc), moved_to="webhooks.attempts.invalid")
            metrics.RECORDS.labels("invalid").inc()
            message.reject(requeue=False)
            return
        self._pending.append((message, records))
        self._pending_records += len(records)
        self._arrived.set()

    async def _write_loop(self, channel: AmqpChannel) -> None:
        while channel.is_open:
            if not self._pending:
                if self._stop.is_set():
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self._pending_records < self._batch_records and not self._stop.is_set():
                await asyncio.sleep(self._linger)  # let a batch fill up
            await self._write(self._take(), channel)

    def _take(self) -> list[tuple[Message, list[AttemptRecord]]]:
        taken: list[tuple[Message, list[AttemptRecord]]] = []
        count = 0
        while self._pending:
            if taken and count + len(self._pending[0][1]) > self._batch_records:
                break
            item = self._pending.pop(0)
            taken.append(item)
            count += len(item[1])
        self._pending_records -= count
        return taken

    async def _write(
        self, taken: list[tuple[Message, list[AttemptRecord]]], channel: AmqpChannel
    ) -> None:
        """Write ``taken`` until it commits; on a stop or a lost channel the broker keeps it."""
        backoff = self._retry
        reported = False
        self._writing = taken
        try:
            while taken and channel.is_open:
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
                        return  # unacked: the broker hands them out again
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                    continue
                metrics.STORE_AVAILABLE.set(1)
                if reported:
                    log.info("recorder_store_available")
        finally:
            self._writing = []

    async def _commit(self, taken: list[tuple[Message, list[AttemptRecord]]]) -> None:
        """One transaction for everything in ``taken``; acked (and removed from it) after."""
        records = [record for _, batch in taken for record in batch]
        started = time.monotonic()
        written = await asyncio.to_thread(self._store.write, records)
        metrics.WRITE_DURATION.observe(time.monotonic() - started)
        for message, _ in taken:
            message.ack()
        taken.clear()
        metrics.RECORDS.labels("written").inc(written)
        metrics.RECORDS.labels("duplicate").inc(len(records) - written)

    async def _write_one_by_one(self, taken: list[tuple[Message, list[AttemptRecord]]]) -> None:
        """Each message in its own transaction; one the store refuses goes to the invalid queue."""
        while taken:
            item = taken[0]
            try:
                await self._commit([item])
            except StoreUnavailableError:
                raise  # the rest stays in ``taken``, for the retry
            except Exception as exc:  # a StoreError, or a record nobody foresaw
                log.error(
                    "attempt_batch_refused_by_store",
                    error=str(exc),
                    records=len(item[1]),
                    moved_to="webhooks.attempts.invalid",
                )
                metrics.RECORDS.labels("invalid").inc(len(item[1]))
                item[0].reject(requeue=False)
            taken.pop(0)

    @staticmethod
    def _oldest_age(held: Sequence[tuple[Message, list[AttemptRecord]]]) -> float:
        oldest = min((r.ended_at.timestamp() for _, batch in held[:1] for r in batch), default=None)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
