"""The worker daemon: connect, declare, consume, reconnect, stop gracefully.

Each subscriber's consumer, breaker and pause live in its lane (worker.lane);
which subscribers there are, and their changes while running, is the
reconciler's (worker.reconciler, fed by worker.subscriber_source).  This module
owns the connection's life and the in-flight deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import Awaitable
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from broker.async_channel import AmqpChannel, Message
from broker.async_connection import AmqpConnection
from broker.declarer import declare_topology
from config.errors import BrokerError, ConfigError, StoreError
from config.settings import Settings
from worker import metrics
from worker.attempt_log import AttemptLog
from worker.change_notices import ChangeNotice, ChangeNotices
from worker.delivery import Deliverer
from worker.fact_emitter import FactEmitter
from worker.health import HealthServer
from worker.lane import Lane
from worker.lanes import Lanes
from worker.pause import paused_among
from worker.processor import MessageProcessor
from worker.reconciler import Reconciler
from worker.registry import reconcile_registry
from worker.status import status_document
from worker.subscriber_source import SourceSnapshot, SubscriberSource, source_for

# How long to wait between attempts to read the subscribers for the first time.
_FIRST_LOAD_RETRY_SECONDS = 5.0
# After the drain, how long the delivery log may take to publish what it holds.
_ATTEMPT_LOG_FLUSH_SECONDS = 5.0

log = structlog.get_logger("worker")


class Worker:
    """One worker process. ``run()`` returns after ``request_stop()`` and a graceful drain."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: SubscriberSource | None = None,
        requeue_delay_seconds: float = 5.0,
        pause_poll_seconds: float = 10.0,
        full_pause_check_every: int = 6,
    ) -> None:
        self.settings = settings
        self._requeue_delay = requeue_delay_seconds
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._marker_checks: set[asyncio.Task[None]] = set()
        self._ready = False
        self._lanes = Lanes(
            settings.broker,
            pause_poll_seconds=pause_poll_seconds,
            full_pause_check_every=full_pause_check_every,
        )
        # The endpoint store when DATABASE_URL is set, else the subscriber file.
        self.reconciler = Reconciler(
            source or source_for(settings), self._lanes, settings.broker, settings.retry
        )
        self.health = HealthServer(
            settings.metrics_host, settings.metrics_port, self.is_ready, self.status
        )

    def is_ready(self) -> bool:
        """Connected to the broker and consuming every work queue not paused or open on purpose."""
        return self._ready

    def request_stop(self) -> None:
        """Begin a graceful stop (safe to call from a signal handler, more than once)."""
        if not self._stop.is_set():
            log.info("worker_stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        self._stop.set()

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet finished."""
        return len(self._tasks)

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows: per subscriber, circuit state and pause."""
        reconciler = self.reconciler
        return status_document(
            ready=self._ready,
            lanes=self._lanes,
            removed=reconciler.removed,
            config={
                "source": reconciler.source.describe(),
                "version": reconciler.version,
                "fingerprint": reconciler.fingerprint,
            },
        )

    async def run(self) -> None:
        """Serve until asked to stop; reconnects on its own whenever the broker goes away."""
        await self.health.start()
        facts = FactEmitter.start(self.settings.broker)
        try:
            snapshot = await self._first_snapshot()
            if snapshot is None:
                return
            self.reconciler.adopt(snapshot)
            # What exists now (modules, subscribers, lanes) lives as long as the
            # process: kept out of every later collection, a full one no longer
            # stops the loop for ~0.1 s (measured: 75 ms with 1,000 endpoints,
            # 147 ms with 10,000, 0 after this; docs/scaling.md). Garbage first:
            # frozen, it would never be collected.
            gc.collect()
            gc.freeze()
            log.info(
                "worker_started",
                subscribers=len(snapshot.specs),
                source=self.reconciler.source.describe(),
                config_version=snapshot.version,
                broker=self.settings.broker.redacted,
                metrics_port=self.health.port,
            )
            attempt_log = AttemptLog(self.settings.broker) if self.settings.delivery_log else None
            async with Deliverer(
                allow_private_networks=self.settings.security.allow_private_networks,
                proxy=self.settings.egress_proxy_url,
                keep_headers=attempt_log is not None,
            ) as deliverer:
                processor = MessageProcessor(
                    deliverer,
                    self.settings.retry,
                    requeue_delay_seconds=self._requeue_delay,
                    attempt_log=attempt_log,
                )
                if attempt_log is not None:
                    attempt_log.start()
                try:
                    await self._serve_until_stopped(processor)
                finally:
                    if attempt_log is not None:
                        await attempt_log.close(_ATTEMPT_LOG_FLUSH_SECONDS)
        finally:
            gc.unfreeze()  # the process may go on (tests, an embedding program)
            self._set_ready(False)
            self.reconciler.source.close()
            await facts.stop()
            await self.health.stop()
            log.info("worker_stopped")

    async def _serve_until_stopped(self, processor: MessageProcessor) -> None:
        first = True
        while not self._stop.is_set():
            connection = await self._connect()
            if connection is None:
                break
            if not first:
                metrics.BROKER_RECONNECTS.inc()
            first = False
            await self._serve(connection, processor)

    async def _first_snapshot(self) -> SourceSnapshot | None:
        """The subscribers to start with; waits (not ready) while the store cannot be read."""
        while not self._stop.is_set():
            try:
                return await self.reconciler.source.load()
            except (StoreError, ConfigError):
                pass  # the source logged it (store_unavailable, once)
            await self._sleep_unless_stopped(_FIRST_LOAD_RETRY_SECONDS)
        return None

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
            # The subscribers as the lanes have them now (not as at start-up): what
            # the reconciler applied since is declared again after a reconnect.
            # The topology function is synchronous (shared with the producer);
            # run it in a thread so the event loop keeps serving health checks.
            # The pause markers and the registry are independent of the declaration:
            # the three run side by side, each on a connection of its own.
            ids = self._lanes.subscriber_ids
            _, paused, removed = await _all_or_none(
                asyncio.to_thread(
                    declare_topology,
                    self.settings.broker,
                    self._lanes.subscribers,
                    self.settings.retry,
                ),
                asyncio.to_thread(paused_among, self.settings.broker, ids),
                asyncio.to_thread(reconcile_registry, self.settings.broker, ids),
            )
            connection = await AmqpConnection.open(self.settings.broker, name=name)
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            raise
        self.reconciler.report_removed(removed, known_too=True)
        try:
            consumer = await connection.channel()
            publisher = await connection.channel()
            await publisher.enable_confirms()
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            await connection.close()
            raise
        for subscriber_id in paused:
            if subscriber_id in self._lanes:
                self._lanes[subscriber_id].set_paused(True, "pause marker present")
        return connection, consumer, publisher

    async def _serve(
        self, opened: tuple[AmqpConnection, AmqpChannel, AmqpChannel], processor: MessageProcessor
    ) -> None:
        connection, consumer, publisher = opened

        def handle(lane: Lane, message: Message) -> None:
            ticket = lane.breaker.ticket()
            task = asyncio.create_task(self._handle(lane, processor, message, publisher, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            await self._lanes.start_consuming(consumer, handle)
            # Heard before the first reconciliation below, so that no change made
            # from here on can slip between the two.
            notices = await ChangeNotices.start(connection, self._on_notice)
        except BrokerError as exc:
            log.warning("consume_failed", error=str(exc))
            self._lanes.forget_consumers()
            await connection.close()
            return
        self._set_ready(True)
        log.info(
            "consuming",
            queues=self._lanes.consuming,
            paused=sorted(lane.subscriber.id for lane in self._lanes if lane.paused),
        )

        stop_waiter = asyncio.ensure_future(self._stop.wait())
        background = [
            asyncio.ensure_future(self._lanes.supervise()),
            asyncio.ensure_future(self.reconciler.run(connection)),
        ]
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter,
                connection.closed,
                consumer.closed,
                consumer.cancelled_by_broker,
                publisher.closed,
                notices.closed,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._set_ready(False)

        if self._stop.is_set():
            await self._drain(connection, consumer)
            return
        if consumer.cancelled_by_broker.done() and not consumer.closed.done():
            # Reconnecting re-declares the topology (so a deleted work queue comes
            # back, empty) and consumes every queue again.
            log.error(
                "consumer_cancelled_by_broker",
                consumer_tag=consumer.cancelled_by_broker.result(),
                in_flight=self.in_flight,
            )
        else:
            reason = next(
                (
                    f.result()
                    for f in (connection.closed, consumer.closed, publisher.closed, notices.closed)
                    if f.done()
                ),
                None,
            )
            log.warning("broker_connection_lost", reason=repr(reason), in_flight=self.in_flight)
        self._lanes.forget_consumers()
        # In-flight deliveries finish on their own; their acks are skipped because
        # the channel is gone, and the broker redelivers those messages to us.
        await connection.close()

    def _on_notice(self, notice: ChangeNotice) -> None:
        """A change notice for the reconciler, or a pause marker to follow now."""
        if notice.pause_marker is not None:
            task = asyncio.create_task(self._lanes.check_marker(notice.pause_marker))
            self._marker_checks.add(task)
            task.add_done_callback(self._marker_checks.discard)
        self.reconciler.notice(notice)

    async def _drain(self, connection: AmqpConnection, consumer: AmqpChannel) -> None:
        """Stop taking messages, let in-flight ones finish within the grace period, close."""
        await self._lanes.stop_consuming(consumer)
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
        # Acks wait for the end of a loop turn (broker.async_connection batches them); send
        # the last ones now, ahead of the close, or their messages come back.
        consumer.flush_acks()
        await connection.close()

    async def _handle(
        self,
        lane: Lane,
        processor: MessageProcessor,
        message: Message,
        publisher: AmqpChannel,
        ticket: int,
    ) -> None:
        settled = await processor.process(lane.subscriber, message, publisher)
        if settled is None:
            return
        await self._lanes.settle(lane, ticket, settled, message.properties.message_id)


async def _all_or_none(*steps: Awaitable[Any]) -> list[Any]:
    """Await every step; if one fails, still wait for the others (threads cannot be
    cancelled), then raise the first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
