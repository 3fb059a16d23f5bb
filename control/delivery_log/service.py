"""The recorder process: the recorder, retention and a health/metrics server, together."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from config.errors import BrokerError
from config.settings import Settings
from config.topology import DELIVERY_LOG_QUEUE
from control.delivery_log import metrics
from control.delivery_log.queue_depth import queue_depth
from control.delivery_log.recorder import Recorder
from control.delivery_log.retention import Retention
from control.store.attempts import AttemptStore
from worker.health import HealthServer

log = structlog.get_logger("recorder")

_QUEUE_DEPTH_SECONDS = 15.0


class RecorderService:
    """Runs until :meth:`request_stop`; ready while consuming the delivery log queue."""

    def __init__(self, settings: Settings, store: AttemptStore) -> None:
        self.settings = settings
        self.store = store
        self.recorder = Recorder(settings.broker, store)
        self.retention = Retention(store, timedelta(days=settings.delivery_log_retention_days))
        self.health = HealthServer(
            settings.metrics_host, settings.recorder_metrics_port, self.is_ready
        )

    def is_ready(self) -> bool:
        """Connected and consuming."""
        return self.recorder.connected

    def request_stop(self) -> None:
        """Begin a clean stop (safe from a signal handler)."""
        log.info("recorder_stopping")
        self.recorder.request_stop()

    async def run(self) -> None:
        """Record, apply retention and serve metrics until asked to stop."""
        await self.health.start()
        log.info(
            "recorder_started",
            store=repr(self.store),
            broker=self.settings.broker.redacted,
            retention_days=self.settings.delivery_log_retention_days,
            metrics_port=self.health.port,
        )
        background = [
            asyncio.ensure_future(self.retention.run()),
            asyncio.ensure_future(self._watch_queue()),
        ]
        try:
            await self.recorder.run()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.health.stop()
            log.info("recorder_stopped")

    async def _watch_queue(self) -> None:
        while True:
            try:
                depth = await asyncio.to_thread(queue_depth, self.settings.broker)
            except BrokerError as exc:
                log.debug("queue_depth_unknown", queue=DELIVERY_LOG_QUEUE, error=str(exc))
            else:
                metrics.QUEUE_MESSAGES.set(depth)
            await asyncio.sleep(_QUEUE_DEPTH_SECONDS)
