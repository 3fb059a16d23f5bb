"""The worker daemon: connect, declare, consume, reconnect, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from config.errors import BrokerError
from config.settings import Settings
from config.subscribers import Subscriber
from config.topology import declare_topology, work_queue
from worker import metrics
from worker.amqp import AmqpChannel, AmqpConnection, Message
from worker.delivery import Deliverer
from worker.health import HealthServer
from worker.processor import MessageProcessor

log = structlog.get_logger("worker")


class Worker:
    """One worker process. ``run()`` returns after ``request_stop()`` and a graceful drain."""

    def __init__(self, settings: Settings, *, requeue_delay_seconds: float = 5.0) -> None:
        self.settings = settings
        self._requeue_delay = requeue_delay_seconds
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = False
        self.health = HealthServer(settings.metrics_host, settings.metrics_port, self.is_ready)

    def is_ready(self) -> bool:
        """Connected to the broker and consuming every work queue."""
        return self._ready

    def request_stop(self) -> None:
        """Begin a graceful stop (safe to call from a signal handler, more than once)."""
        if not self._stop.is_set():
            log.info("worker_stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Serve until asked to stop; reconnects on its own whenever the broker goes away."""
        await self.health.start()
        log.info(
            "worker_started",
            subscribers=len(self.settings.subscribers),
            broker=self.settings.broker.redacted,
            metrics_port=self.health.port,
        )
        try:
            async with Deliverer(
                allow_private_networks=self.settings.security.allow_private_networks
            ) as deliverer:
                processor = MessageProcessor(
                    deliverer, self.settings.retry, requeue_delay_seconds=self._requeue_delay
                )
                first = True
                while not self._stop.is_set():
                    connection = await self._connect()
                    if connection is None:
                        break
                    if not first:
                        metrics.BROKER_RECONNECTS.inc()
                    first = False
                    await self._serve(connection, processor)
        finally:
            self._set_ready(False)
            await self.health.stop()
            log.info("worker_stopped")

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        metrics.READY.set(1 if ready else 0)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _connect(self) -> tuple[AmqpConnection, AmqpChannel, AmqpChannel] | None:
        """Connect, declare the topology and open channels; retry with backoff until stopped."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BrokerError),
            wait=wait_exponential_jitter(multiplier=0.2, max=15, jitter=0.5),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep_unless_stopped,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if self._stop.is_set():
                        return None
                    return await self._open()
        except BrokerError:
            return None  # only reached when stopping mid-retry
        return None

    async def _open(self) -> tuple[AmqpConnection, AmqpChannel, AmqpChannel]:
        name = f"webhook-worker {socket.gethostname()} pid {os.getpid()}"
        try:
            # The topology function is synchronous (shared with the producer);
            # run it in a thread so the event loop keeps serving health checks.
            await asyncio.to_thread(
                declare_topology,
                self.settings.broker,
                self.settings.subscribers,
                self.settings.retry,
            )
            connection = await AmqpConnection.open(self.settings.broker, name=name)
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            raise
        try:
            consumer = await connection.channel()
            publisher = await connection.channel()
            await publisher.enable_confirms()
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            await connection.close()
            raise
        return connection, consumer, publisher

    async def _serve(
        self, opened: tuple[AmqpConnection, AmqpChannel, AmqpChannel], processor: MessageProcessor
    ) -> None:
        connection, consumer, publisher = opened

        def on_message(subscriber: Subscriber) -> Any:
            def handle(message: Message) -> None:
                task = asyncio.create_task(processor.process(subscriber, message, publisher))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            return handle

        tags: list[str] = []
        try:
            for sub in self.settings.subscribers:
                tags.append(
                    await consumer.consume(
                        work_queue(sub.id), on_message(sub), prefetch=sub.max_in_flight
                    )
                )
        except BrokerError as exc:
            log.warning("consume_failed", error=str(exc))
            await connection.close()
            return
        metrics.CONSUMERS.set(len(tags))
        self._set_ready(True)
        log.info("consuming", queues=len(tags))

        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter, connection.closed, consumer.closed, publisher.closed
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
        self._set_ready(False)
        metrics.CONSUMERS.set(0)

        if self._stop.is_set():
            await self._drain(connection, consumer, tags)
            return
        reason = next(
            (
                f.result()
                for f in (connection.closed, consumer.closed, publisher.closed)
                if f.done()
            ),
            None,
        )
        log.warning("broker_connection_lost", reason=repr(reason), in_flight=self.in_flight)
        # In-flight deliveries finish on their own; their acks are skipped because
        # the channel is gone, and the broker redelivers those messages to us.
        await connection.close()

    async def _drain(
        self, connection: AmqpConnection, consumer: AmqpChannel, tags: list[str]
    ) -> None:
        """Stop taking messages, let in-flight ones finish within the grace period, close."""
        for tag in tags:
            with contextlib.suppress(BrokerError):
                await consumer.cancel(tag)
        pending = set(self._tasks)
        log.info("draining", in_flight=len(pending))
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
            if late:
                # Unfinished deliveries are abandoned unacked: closing the channel
                # returns them to the queue for the next worker.
                log.warning("drain_deadline_passed", abandoned=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5)
        await connection.close()
