"""Retention: attempts and bodies older than the configured age are deleted, a batch at a time.

Each batch is its own short transaction in a worker thread, so the recorder's
writes never wait behind a long delete: on PostgreSQL they touch other rows,
and on SQLite (one writer at a time) they wait for one batch at most.  After
each pass the metrics say what the log keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from config.errors import StoreError
from control.delivery_log import metrics
from control.store.attempts import AttemptStore
from control.store.clock import utc_now

log = structlog.get_logger("recorder")

DEFAULT_BATCH_ROWS = 1000
DEFAULT_INTERVAL_SECONDS = 300.0
# Room for the recorder (and the database) between two delete batches.
_PAUSE_BETWEEN_BATCHES_SECONDS = 0.05


@dataclass(frozen=True)
class Pass:
    """One retention pass: the cut-off and how many rows it deleted."""

    cutoff: datetime
    attempts: int
    bodies: int


class Retention:
    """Deletes what is older than ``max_age`` every ``interval_seconds``."""

    def __init__(
        self,
        store: AttemptStore,
        max_age: timedelta,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._max_age = max_age
        self._batch = batch_rows
        self._interval = interval_seconds
        self._clock = clock

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and tried again later."""
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("retention_failed", error=str(exc))
            except Exception:
                # A bug must not end retention for good (nor the recorder with it).
                log.exception("retention_crashed")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> Pass:
        """Delete everything older than the cut-off (in batches), then export what is kept."""
        now = self._clock()
        cutoff = now - self._max_age
        attempts = await self._drain(self._store.delete_attempts_before, cutoff)
        bodies = await self._drain(self._store.delete_bodies_before, cutoff)
        metrics.DELETED.labels("attempts").inc(attempts)
        metrics.DELETED.labels("bodies").inc(bodies)
        kept = await asyncio.to_thread(self._store.kept)
        metrics.KEPT_ATTEMPTS.set(kept.attempts)
        metrics.KEPT_BODIES.set(kept.bodies)
        oldest = kept.oldest_started_at
        metrics.OLDEST_ATTEMPT_AGE.set(
            0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        )
        if attempts or bodies:
            log.info(
                "retention_deleted",
                attempts=attempts,
                bodies=bodies,
                cutoff=cutoff.isoformat(),
                kept_attempts=kept.attempts,
            )
        return Pass(cutoff, attempts, bodies)

    async def _drain(self, delete: Callable[[datetime, int], int], cutoff: datetime) -> int:
        total = 0
        while True:
            deleted = await asyncio.to_thread(delete, cutoff, self._batch)
            total += deleted
            if deleted < self._batch:
                return total
            await asyncio.sleep(_PAUSE_BETWEEN_BATCHES_SECONDS)
