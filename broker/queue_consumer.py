"""One queue consumed until stopped: connect, declare, consume, settle as a handler decides,
reconnect with backoff; the loop shared by ``webhook-recorder`` and ``webhook-notifier``.

Each delivery is handed to an async handler, which answers with a
:class:`Settlement` once the message's next step is certain (its record
committed, its notice sent, ...).  Only then is the message settled: acked,
rejected to the queue's dead-letter exchange, or given back to the queue.  A
handler that is cancelled (its work dropped, or the channel lost) settles
nothing: the broker hands the message out again once the channel closes.  A
handler that raises is logged and its message dead-lettered, so one message
nobody foresaw cannot crash every consumer in turn.

After every (re)connect the topology is declared again (it is data, from
:mod:`config.topology`), so a broker that lost its queues gets them back.
Connecting is retried with exponential backoff (tenacity) until it works or a
stop is requested.  A stop cancels the consumer, waits up to ``drain_seconds``
for the handlers under way, cancels the rest (their messages go back to the
queue) and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from broker.async_connection import AmqpConnection
from broker.consumers import Message, OnMessage
from broker.reconnect_backoff import Backoff, open_until_stopped
from broker.url import BrokerUrl
from config.errors import BrokerError
from config.topology import Topology

log = structlog.get_logger("queue_consumer")

DEFAULT_BACKOFF = Backoff()

# After the drain deadline, how long cancelled handlers get to unwind.
_CANCEL_SECONDS = 5.0


class Settlement(enum.Enum):
    """What a handler decided about one message."""

    ACK = "ack"  # its next step is certain: the broker may forget it
    DEAD_LETTER = "dead_letter"  # unusable: rejected to the queue's dead-letter exchange
    REQUEUE = "requeue"  # not now: back to the queue, to be delivered again later


Handler = Callable[[Message], Awaitable[Settlement]]


class ConsumerChannel(Protocol):
    """What the loop needs of :class:`broker.async_channel.AmqpChannel` (tests fake it)."""

    closed: asyncio.Future[BaseException]
    cancelled_by_broker: asyncio.Future[str]

    @property
    def is_open(self) -> bool: ...

    async def declare(self, topology: Topology) -> None: ...

    async def consume(self, queue: str, on_message: OnMessage, *, prefetch: int) -> str: ...

    async def cancel(self, consumer_tag: str) -> None: ...

    def flush_acks(self) -> None: ...


class ConsumerConnection(Protocol):
    """What the loop needs of :class:`broker.async_connection.AmqpConnection`."""

    closed: asyncio.Future[BaseException]

    async def channel(self) -> ConsumerChannel: ...

    async def close(self) -> None: ...


Connect = Callable[[BrokerUrl, str], Awaitable[ConsumerConnection]]


async def open_connection(broker: BrokerUrl, name: str) -> ConsumerConnection:
    """A real connection to ``broker`` (the default ``connect`` of QueueConsumer)."""
    return await AmqpConnection.open(broker, name=name)


class QueueConsumer:
    """Consumes ``queue`` with at most ``prefetch`` unsettled messages; ``run()`` until stopped."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        process: str,
        topology: Topology,
        queue: str,
        prefetch: int,
        handle: Handler,
        on_ready: Callable[[bool], None] | None = None,
        drain_seconds: float = 30.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect: Connect = open_connection,
    ) -> None:
        self._broker = broker
        self._name = f"{process} {socket.gethostname()} pid {os.getpid()}"
        self._topology = topology
        self._queue = queue
        self._prefetch = prefetch
        self._handle = handle
        self._on_ready = on_ready
        self._drain_seconds = drain_seconds
        self._backoff = backoff
        self._connect = connect
        self._stop = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.ready = False

    @property
    def in_flight(self) -> int:
        """Messages handed to the handler and not settled yet."""
        return len(self._in_flight)

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until :meth:`request_stop`, reconnecting whenever the broker goes away."""
        while not self._stop.is_set():
            opened = await self._open_retrying()
            if opened is None:
                break
            await self._serve(*opened)
            # A channel lost as soon as it consumed must not become a hot loop.
            await self._sleep(self._backoff.first_seconds)

    async def _open_retrying(self) -> tuple[ConsumerConnection, ConsumerChannel, str] | None:
        return await open_until_stopped(
            self._open, self._backoff, stop=self._stop, sleep=self._sleep
        )

    async def _open(self) -> tuple[ConsumerConnection, ConsumerChannel, str]:
        try:
            connection = await self._connect(self._broker, self._name)
        except BrokerError as exc:
            log.warning("broker_connect_failed", queue=self._queue, error=str(exc))
            raise
        try:
            channel: ConsumerChannel = await connection.channel()
            # Every time: a broker that lost the queue (a new node, a reset) gets it back.
            await channel.declare(self._topology)
            tag = await channel.consume(self._queue, self._received, prefetch=self._prefetch)
        except BrokerError as exc:
            # Refused (a queue declared with other arguments, a missing permission):
            # waited on like an unreachable broker rather than asked in a loop.
            log.warning("consume_failed", queue=self._queue, error=str(exc))
            await connection.close()
            raise
        return connection, channel, tag

    async def _serve(
        self, connection: ConsumerConnection, channel: ConsumerChannel, tag: str
    ) -> None:
        self._set_ready(True)
        log.info("consume_started", queue=self._queue, prefetch=self._prefetch)
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter,
                connection.closed,
                channel.closed,
                channel.cancelled_by_broker,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set() and channel.is_open:
                with contextlib.suppress(BrokerError):
                    await channel.cancel(tag)  # after cancel-ok nothing more arrives
                self._set_ready(False)
                await self._drain(connection, channel)
                channel.flush_acks()
            elif not self._stop.is_set():
                log.warning(
                    "broker_connection_lost",
                    queue=self._queue,
                    reason=self._lost_reason(connection, channel),
                )
        finally:
            stop_waiter.cancel()
            self._set_ready(False)  # before the cancel: a handler may drop its state first
            await self._cancel_in_flight()
            await connection.close()

    async def _drain(self, connection: ConsumerConnection, channel: ConsumerChannel) -> None:
        """Wait for the handlers under way, until the deadline or the channel goes."""
        if not self._in_flight:
            return
        log.info("consume_draining", queue=self._queue, in_flight=len(self._in_flight))
        idle = asyncio.ensure_future(self._idle.wait())
        ends: set[asyncio.Future[Any]] = {idle, connection.closed, channel.closed}
        try:
            await asyncio.wait(
                ends, timeout=self._drain_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            idle.cancel()
        if self._in_flight:
            log.warning(
                "consume_drain_incomplete",
                queue=self._queue,
                left_to_the_broker=len(self._in_flight),
                seconds=self._drain_seconds,
            )

    async def _cancel_in_flight(self) -> None:
        """Cancel what is still being handled: unsettled, those messages go back to the queue."""
        late = set(self._in_flight)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=_CANCEL_SECONDS)

    def _received(self, message: Message) -> None:
        task = asyncio.ensure_future(self._settle_when_handled(message))
        self._in_flight.add(task)
        self._idle.clear()
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not self._in_flight:
            self._idle.set()

    async def _settle_when_handled(self, message: Message) -> None:
        try:
            settlement = await self._handle(message)
        except asyncio.CancelledError:
            raise  # left unsettled: the broker hands it out again when the channel closes
        except Exception:
            log.exception(
                "message_handler_failed", queue=self._queue, moved_to="dead-letter exchange"
            )
            settlement = Settlement.DEAD_LETTER
        if settlement is Settlement.ACK:
            message.ack()
        else:
            message.reject(requeue=settlement is Settlement.REQUEUE)

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            if self._on_ready is not None:
                self._on_ready(ready)

    @staticmethod
    def _lost_reason(connection: ConsumerConnection, channel: ConsumerChannel) -> str:
        if channel.cancelled_by_broker.done():
            return "consumer cancelled by the broker (queue deleted?)"
        closed = [repr(f.result()) for f in (connection.closed, channel.closed) if f.done()]
        return closed[0] if closed else "unknown"

    async def _sleep(self, seconds: float) -> None:
        """Sleep between connection attempts, cut short by a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
