"""A bounded outbox published to RabbitMQ in confirmed batches, off its callers' path.

``Outbox.put`` is all a caller does: it appends to an in-memory buffer and
returns; it never awaits and never raises for the broker's sake.  A background
task takes batches (up to a count and a size, after a short linger for one to
fill) and publishes each as one persistent message with publisher confirms, a
few batches in flight at once, on a connection of its own: whatever the broker
does to that connection (alarms, credit flow, a full queue) cannot hold back
the connection that carries the callers' own work.  The topology is declared
again after every connect.

The buffer is bounded by items and bytes.  Past the bound items are dropped
(the oldest or the newest, as configured) and counted as ``buffer_full``:
dropping rather than waiting is the point, the callers are never slowed.  A
batch the broker did not confirm (channel lost, unroutable) goes back to the
front of the buffer and is sent again after a reconnect, so it may arrive
twice: consumers absorb duplicates.  A batch the queue refused (nack: full) is
sent again after a pause, or dropped as ``queue_full``, as configured.  A
batch that fails for any other reason (a bug) is dropped as ``error`` rather
than tried forever.  ``close`` flushes until a deadline; what is left then is
counted as ``shutdown``.  A process killed with SIGKILL loses its buffer
uncounted: at most the few seconds' worth a healthy broker leaves in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import pika
import structlog

from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, NackedError, UnroutableError
from config.topology import Topology

log = structlog.get_logger("broker")

T = TypeVar("T")
DropReason = Literal["buffer_full", "queue_full", "error", "shutdown"]
_DROP_LOG_SECONDS = 60.0
# How long the last flush waits between failed connects (the deadline bounds it).
_CLOSING_RETRY_SECONDS = 0.2
# The most a reconnect (or the end of a flush) waits for a connection to close.
_CONNECTION_CLOSE_SECONDS = 5.0
_ABANDON_SECONDS = 1.0  # the same once past close()'s deadline


class OutboxMeter(Protocol):
    """Where an outbox reports what became of its items (the owner's metrics)."""

    def published(self, items: int) -> None: ...
    def dropped(self, reason: DropReason, items: int) -> None: ...
    def refused(self) -> None: ...
    def buffered(self, items: int) -> None: ...


class OutboxChannel(Protocol):
    """What an outbox needs of a channel (broker.async_channel.AmqpChannel)."""

    @property
    def closed(self) -> asyncio.Future[BaseException]: ...
    async def enable_confirms(self) -> None: ...
    async def declare(self, topology: Topology) -> None: ...
    async def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None: ...
    async def close(self) -> None: ...


class OutboxConnection(Protocol):
    """What an outbox needs of a connection (broker.async_connection.AmqpConnection)."""

    async def channel(self) -> Any: ...
    async def close(self) -> None: ...


Connect = Callable[[], Awaitable[OutboxConnection]]


def broker_connector(broker: BrokerUrl, name: str) -> Connect:
    """Open a connection of its own to ``broker``, shown as ``name`` in the management UI."""

    async def connect() -> OutboxConnection:
        return await AmqpConnection.open(broker, name=name)

    return connect


@dataclass(frozen=True)
class OutboxRoute(Generic[T]):
    """Where an outbox's batches go and how one becomes a message."""

    # Log events are named after it: {name}_publish_failed, {name}_dropped...
    name: str
    exchange: str
    topology: Topology
    encode: Callable[[Sequence[T]], bytes]
    properties: pika.BasicProperties
    # Bytes an item takes in a batch, for the byte bounds (None: not bounded by bytes).
    size: Callable[[T], int] | None = None


@dataclass(frozen=True)
class OutboxLimits:
    """Bounds and pacing of an outbox."""

    max_items: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    batch_items: int = 250
    batch_bytes: int = 1024 * 1024
    linger_seconds: float = 0.05
    in_flight: int = 4
    retry_seconds: float = 1.0  # the first pause after a failure; doubles up to the max
    max_retry_seconds: float = 15.0
    shed: Literal["oldest", "newest"] = "oldest"
    refused: Literal["retry", "drop"] = "retry"


class Outbox(Generic[T]):
    """Items waiting for the broker, published in confirmed batches until closed."""

    def __init__(
        self,
        route: OutboxRoute[T],
        connect: Connect,
        meter: OutboxMeter,
        limits: OutboxLimits = OutboxLimits(),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._route = route
        self._connect = connect
        self._meter = meter
        self._limits = limits
        self._size = route.size
        self._clock = clock
        self._buffer: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_items = 0
        self._refused = False  # a batch was refused: pause before the next one
        self._wake = asyncio.Event()
        self._closing = False
        self._abandoned = False
        self._closed = False
        self._flushed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._unlogged_drops = 0
        self._last_drop_log = -_DROP_LOG_SECONDS

    @property
    def buffered(self) -> int:
        """Items not yet confirmed by the broker (waiting, or in a batch in flight)."""
        return len(self._buffer) + self._in_flight_items

    def put(self, item: T) -> None:
        """Hand one item over; O(1), never blocks, never raises for the broker's sake."""
        if self._closed:
            self._drop("shutdown", 1)
            return
        size = 0 if self._size is None else self._size(item)
        buffer = self._buffer
        if self._limits.shed == "newest" and self._full(len(buffer) + 1, self._bytes + size):
            self._drop("buffer_full", 1)
            return
        buffer.append((item, size))
        self._bytes += size
        if self._full(len(buffer), self._bytes):
            self._shed()
        self._meter.buffered(len(buffer) + self._in_flight_items)
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        """Start publishing in the background (on the running loop)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"outbox-{self._route.name}")

    async def close(self, deadline_seconds: float) -> None:
        """Publish what is buffered (within ``deadline_seconds``), then disconnect.

        What is still unconfirmed then is counted as dropped (``shutdown``).
        """
        self._closing = True
        self._wake.set()
        runner = self._runner
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), timeout=deadline_seconds)
            self._abandoned = True  # past the deadline: no more waiting for confirms
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for task in list(self._in_flight):
            task.cancel()  # each gives its batch back on the way out
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        self._closed = True
        left = self.buffered
        self._buffer.clear()
        self._bytes = 0
        self._meter.buffered(0)
        if left:
            self._drop("shutdown", left, always=True)

    def _full(self, items: int, size: int) -> bool:
        return items > self._limits.max_items or size > self._limits.max_bytes

    def _shed(self) -> None:
        """Drop the oldest items beyond the bounds (one is always kept, however large)."""
        buffer, dropped = self._buffer, 0
        while len(buffer) > 1 and self._full(len(buffer), self._bytes):
            _, size = buffer.popleft()
            self._bytes -= size
            dropped += 1
        if dropped:
            self._drop("buffer_full", dropped)

    def _drop(self, reason: DropReason, items: int, *, always: bool = False) -> None:
        """Count lost items; a warning at most once a minute (``always``: now)."""
        self._meter.dropped(reason, items)
        self._unlogged_drops += items
        now = self._clock()
        if always or now - self._last_drop_log >= _DROP_LOG_SECONDS:
            log.warning(
                f"{self._route.name}_dropped",
                reason=reason,
                dropped=self._unlogged_drops,
                buffered=self.buffered,
            )
            self._unlogged_drops = 0
            self._last_drop_log = now

    async def _run(self) -> None:
        backoff = self._limits.retry_seconds
        unavailable = False
        while not (self._closing and not self._buffer):
            connection: OutboxConnection | None = None
            try:
                connection = await self._connect()
                channel: OutboxChannel = await connection.channel()
                await channel.enable_confirms()
                await channel.declare(self._route.topology)
                if unavailable:
                    log.info(f"{self._route.name}_available")
                    unavailable = False
                if await self._pump(channel):
                    backoff = self._limits.retry_seconds
                if not channel.closed.done():
                    continue  # everything is out and closing: the loop ends
            except BrokerError as exc:
                if not unavailable:
                    log.warning(f"{self._route.name}_publish_failed", error=str(exc))
                    unavailable = True
            except Exception:
                # A bug: told, and tried again after the backoff rather than given up.
                log.exception(f"{self._route.name}_crashed")
            finally:
                await self._settle_in_flight()
                if connection is not None:
                    wait = _ABANDON_SECONDS if self._abandoned else _CONNECTION_CLOSE_SECONDS
                    with contextlib.suppress(BrokerError, TimeoutError):
                        await asyncio.wait_for(connection.close(), wait)
            await asyncio.sleep(_CLOSING_RETRY_SECONDS if self._closing else backoff)
            backoff = min(backoff * 2, self._limits.max_retry_seconds)
        self._flushed.set()

    async def _pump(self, channel: OutboxChannel) -> bool:
        """Publish batches on ``channel`` until it closes, or until all is out when closing.

        True if a batch went out meanwhile (the broker takes them: the backoff starts over).
        """
        limits, published = self._limits, False
        while not channel.closed.done():
            if not self._buffer:
                if self._closing and not self._in_flight:
                    return True
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                waits: set[asyncio.Future[Any]] = {wake, channel.closed, *self._in_flight}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                continue
            if len(self._buffer) < limits.batch_items and not self._closing:
                await asyncio.sleep(limits.linger_seconds)  # let a batch fill up
            while len(self._in_flight) >= limits.in_flight and not channel.closed.done():
                busy: set[asyncio.Future[Any]] = {channel.closed, *self._in_flight}
                await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
            if channel.closed.done() or not self._buffer:
                continue
            task = asyncio.create_task(self._publish(channel, self._take()))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            published = True
            if self._refused:
                self._refused = False
                await asyncio.sleep(limits.retry_seconds)
        return published

    def _take(self) -> list[tuple[T, int]]:
        limits, buffer = self._limits, self._buffer
        batch: list[tuple[T, int]] = []
        size = 0
        while buffer and len(batch) < limits.batch_items:
            if batch and size + buffer[0][1] > limits.batch_bytes:
                break
            item = buffer.popleft()
            batch.append(item)
            size += item[1]
        self._bytes -= size
        self._in_flight_items += len(batch)
        return batch

    async def _publish(self, channel: OutboxChannel, batch: list[tuple[T, int]]) -> None:
        route = self._route
        try:
            body = route.encode([item for item, _ in batch])
            await channel.publish(route.exchange, "", body, route.properties)
        except NackedError:
            # The queue is full: kept, this batch and the next wait a little.
            self._meter.refused()
            if self._limits.refused == "retry":
                self._refused = True
                self._give_back(batch)
            else:
                self._drop("queue_full", len(batch))
        except UnroutableError:
            # Its queue was deleted: a reconnect declares it again.
            self._give_back(batch)
            self._meter.refused()
            await channel.close()
        except BrokerError:
            self._give_back(batch)  # the channel is gone: sent again after reconnecting
        except asyncio.CancelledError:
            self._give_back(batch)
            raise
        except Exception:
            # A bug, not the broker: these items would fail the same way forever.
            log.exception(f"{route.name}_publish_crashed", items=len(batch))
            self._drop("error", len(batch))
        else:
            self._meter.published(len(batch))
        finally:
            self._in_flight_items -= len(batch)
            self._meter.buffered(self.buffered)

    def _give_back(self, batch: list[tuple[T, int]]) -> None:
        """Unconfirmed items go back to the front, to be sent first (and shed first)."""
        self._buffer.extendleft(reversed(batch))
        self._bytes += sum(size for _, size in batch)
        if self._full(len(self._buffer), self._bytes):
            self._shed()

    async def _settle_in_flight(self) -> None:
        """Wait for the batches in flight: a lost channel fails their confirms at once."""
        if self._in_flight and not self._abandoned:
            await asyncio.wait(set(self._in_flight), timeout=_CONNECTION_CLOSE_SECONDS)
        for task in list(self._in_flight):
            task.cancel()
