"""The worker daemon: connect, declare, consume, reconnect, stop gracefully.

Each subscriber's consumer, breaker and pause live in its lane (worker.lane,
worker.lanes); which subscribers there are, and their changes while running, is
the reconciler's (worker.reconciler, fed by worker.subscriber_source).  Reaching
the broker is worker.connector's, serving on one connection worker.session's.
This module owns the process's life: start, reconnect, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import structlog

from config.errors import ConfigError, StoreError
from config.settings import Settings
from worker import metrics
from worker.attempt_log import AttemptLog
from worker.connector import Connector
from worker.delivery import Deliverer
from worker.fact_emitter import FactEmitter
from worker.health import HealthServer
from worker.lanes import Lanes
from worker.processor import MessageProcessor
from worker.reconciler import Reconciler
from worker.session import Session
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
        self._connector = Connector(
            settings,
            self._lanes,
            self.reconciler,
            stop=self._stop,
            sleep=self._sleep_unless_stopped,
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
        session = Session(
            self._lanes,
            self.reconciler,
            processor,
            stop=self._stop,
            tasks=self._tasks,
            set_ready=self._set_ready,
            grace_seconds=self.settings.shutdown_grace_seconds,
        )
        first = True
        while not self._stop.is_set():
            connection = await self._connector.connect()
            if connection is None:
                break
            if not first:
                metrics.BROKER_RECONNECTS.inc()
            first = False
            await session.serve(connection)

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
