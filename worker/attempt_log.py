"""The worker's side of the delivery log: attempt records to RabbitMQ, off the delivery path.

``AttemptLog.record`` is all a delivery does: it appends to an in-memory buffer
and returns, never awaits, never raises.  A background task takes batches from
the buffer and publishes each as one persistent message, with publisher
confirms, on a connection of its own: the broker throttling or blocking that
connection (a memory or disk alarm, credit flow, a full log queue) can never
hold back the deliveries' acks and retries on the worker's main connection.

When the broker pushes back (nacks a batch because the log queue is full,
confirms slowly, or is away), unconfirmed batches go back to the front of the
buffer and are sent again later; a batch whose confirm never came may arrive
twice, which the recorder's unique key absorbs.  The buffer is bounded by
records and bytes: past the bound the *oldest* records are dropped and counted
(``webhook_delivery_log_dropped_total{reason="buffer_full"}``).  Dropping, and
not waiting, is deliberate: the log describes deliveries and must never slow or
fail one; and the oldest go first because recent attempts are what operators
ask about.  Records still buffered when the worker stops after its grace are
counted as ``shutdown``; a worker killed with SIGKILL loses its buffer
uncounted, at most the few seconds' worth a healthy broker leaves in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from typing import Any

import pika
import structlog

from broker.async_channel import AmqpChannel
from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, PublishError, UnroutableError
from config.topology import DELIVERY_LOG_EXCHANGE, delivery_log_topology
from wire import contract
from wire.attempt_record import AttemptRecord, encode_batch
from worker import metrics

log = structlog.get_logger("worker")

# A record's size besides its excerpt and body (ids, times, headers, JSON).
_RECORD_OVERHEAD_BYTES = 600
_BATCH_CONTENT_TYPE = "application/json"


def record_size(record: AttemptRecord) -> int:
    """Roughly how many bytes ``record`` takes in a batch (base64 included)."""
    body = 0 if record.body is None else len(record.body)
    return _RECORD_OVERHEAD_BYTES + (len(record.response_excerpt) + body) * 4 // 3


class AttemptLog:
    """Buffers attempt records and publishes them in confirmed batches until closed."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        max_records: int = 50_000,
        max_bytes: int = 64 * 1024 * 1024,
        batch_records: int = 250,
        batch_bytes: int = 1024 * 1024,
        linger_seconds: float = 0.05,
        in_flight_batches: int = 4,
        retry_seconds: float = 1.0,
    ) -> None:
        self._broker = broker
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._linger = linger_seconds
        self._max_in_flight = in_flight_batches
        self._retry = retry_seconds
        self._buffer: deque[tuple[AttemptRecord, int]] = deque()
        self._bytes = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_records = 0
        self._refused = False  # a batch was refused: pause before the next one
        self._wake = asyncio.Event()
        self._closing = False
        self._flushed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Records not yet confirmed by the broker (in a batch in flight or waiting)."""
        return len(self._buffer) + self._in_flight_records

    def record(self, record: AttemptRecord) -> None:
        """Hand one record over; O(1), never blocks, never raises for the broker's sake."""
        size = record_size(record)
        self._buffer.append((record, size))
        self._bytes += size
        self._shed()
        metrics.DELIVERY_LOG_BUFFERED.set(self.buffered)
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        """Start publishing in the background (on the running loop)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="attempt-log")

    async def close(self, timeout_seconds: float) -> None:
        """Publish what is buffered (within ``timeout_seconds``), then disconnect.

        What is still unconfirmed then is counted as dropped (``shutdown``).
        """
        self._closing = True
        self._wake.set()
        runner = self._runner
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), timeout=timeout_seconds)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        left = self.buffered
        if left:
            metrics.DELIVERY_LOG_DROPPED.labels("shutdown").inc(left)
            log.warning("delivery_log_records_dropped", reason="shutdown", records=left)
        self._buffer.clear()
        self._bytes = 0
        metrics.DELIVERY_LOG_BUFFERED.set(0)

    def _shed(self) -> None:
        dropped = 0
        while len(self._buffer) > 1 and (
            len(self._buffer) > self._max_records or self._bytes > self._max_bytes
        ):
            _, size = self._buffer.popleft()
            self._bytes -= size
            dropped += 1
        if dropped:
            metrics.DELIVERY_LOG_DROPPED.labels("buffer_full").inc(dropped)

    async def _run(self) -> None:
        name = f"webhook-worker delivery-log {socket.gethostname()} pid {os.getpid()}"
        reported = False
        while not (self._closing and not self._buffer):
            try:
                connection = await AmqpConnection.open(self._broker, name=name)
            except BrokerError as exc:
                if not reported:
                    log.warning("delivery_log_unavailable", error=str(exc))
                    reported = True
                await self._pause(self._retry)
                continue
            try:
                channel = await connection.channel()
                await channel.enable_confirms()
                await channel.declare(delivery_log_topology())
                if reported:
                    log.info("delivery_log_available")
                    reported = False
                await self._pump(channel)
                if channel.closed.done():
                    await self._pause(self._retry)
            except BrokerError as exc:
                if not reported:
                    log.warning("delivery_log_unavailable", error=str(exc))
                    reported = True
                await self._pause(self._retry)
            finally:
                await self._settle_in_flight()
                await connection.close()
        self._flushed.set()

    async def _pause(self, seconds: float) -> None:
        if not self._closing:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(min(seconds, 0.2))

    async def _pump(self, channel: AmqpChannel) -> None:
        """Publish batches on ``channel`` until it closes or everything is out after close()."""
        while not channel.closed.done():
            if not self._buffer:
                if self._closing and not self._in_flight:
                    return
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                waits: set[asyncio.Future[Any]] = {wake, channel.closed, *self._in_flight}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                continue
            if len(self._buffer) < self._batch_records and not self._closing:
                await asyncio.sleep(self._linger)  # let a batch fill up
            while len(self._in_flight) >= self._max_in_flight and not channel.closed.done():
                busy: set[asyncio.Future[Any]] = {channel.closed, *self._in_flight}
                await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
            if channel.closed.done():
                return
            task = asyncio.create_task(self._publish(channel, self._take()))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            if self._refused:
                self._refused = False
                await asyncio.sleep(self._retry)

    def _take(self) -> list[tuple[AttemptRecord, int]]:
        batch: list[tuple[AttemptRecord, int]] = []
        size = 0
        while self._buffer and len(batch) < self._batch_records:
            if batch and size + self._buffer[0][1] > self._batch_bytes:
                break
            item = self._buffer.popleft()
            batch.append(item)
            size += item[1]
        self._bytes -= size
        self._in_flight_records += len(batch)
        return batch

    async def _publish(self, channel: AmqpChannel, batch: list[tuple[AttemptRecord, int]]) -> None:
        properties = pika.BasicProperties(
            content_type=_BATCH_CONTENT_TYPE, delivery_mode=contract.PERSISTENT
        )
        try:
            body = encode_batch([record for record, _ in batch])
            await channel.publish(DELIVERY_LOG_EXCHANGE, "", body, properties)
        except PublishError as exc:
            # Refused (the queue is full) or unroutable (its queue was deleted):
            # wait a little before the next batch; a reconnect declares it again.
            self._give_back(batch)
            metrics.DELIVERY_LOG_REFUSED.inc()
            self._refused = True
            if isinstance(exc, UnroutableError):
                await channel.close()
        except BrokerError:
            self._give_back(batch)  # the channel is gone: sent again after reconnecting
        except asyncio.CancelledError:
            self._give_back(batch)
            raise
        except Exception:
            self._give_back(batch)
            log.exception("delivery_log_publish_crashed")
        else:
            metrics.DELIVERY_LOG_PUBLISHED.inc(len(batch))
        finally:
            self._in_flight_records -= len(batch)
            metrics.DELIVERY_LOG_BUFFERED.set(self.buffered)

    def _give_back(self, batch: list[tuple[AttemptRecord, int]]) -> None:
        """Unconfirmed records go back to the front, to be sent first (and shed first)."""
        self._buffer.extendleft(reversed(batch))
        self._bytes += sum(size for _, size in batch)
        self._shed()

    async def _settle_in_flight(self) -> None:
        """Wait for the batches in flight: a lost channel fails their confirms at once."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=5)
        for task in list(self._in_flight):
            task.cancel()
