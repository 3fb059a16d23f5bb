"""The subscriber registry's side of a running worker: what the reconciler's passes
added and removed, recorded beside them, and the removed subscribers with queues.

worker.registry is the registry itself; this keeps it up to date without any
pass waiting for it: after a pass it records the ids just added (one small
message) and probes the work queues of the ids just removed; every
``check_seconds`` it runs the full check (every id, merged back into one
message), which the worker also runs at every connect.  (The full check after
every addition or removal took 15-20 s at 10,000 subscribers, and held every
change made meanwhile back as long.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from broker.url import BrokerUrl
from config.errors import BrokerError
from config.topology import work_queue
from worker.lanes import Lanes
from worker.registry import queues_left, reconcile_registry, record

log = structlog.get_logger("worker")

# How often a running worker runs the registry's full check.
CHECK_SECONDS = 300.0


class RegistryKeeper:
    """Records additions, probes removals, and reports removed subscribers with queues."""

    def __init__(self, broker: BrokerUrl, lanes: Lanes) -> None:
        self._broker = broker
        self._lanes = lanes
        # Removed subscribers whose work queue still exists: id -> messages in it.
        self.removed: dict[str, int] = {}
        self._added: set[str] = set()
        self._gone: set[str] = set()
        self._wake = asyncio.Event()
        self.check_seconds = CHECK_SECONDS

    def report_removed(self, removed: Mapping[str, int], *, known_too: bool) -> None:
        """Keep and log the registry's removed subscribers (only new ones unless ``known_too``)."""
        for subscriber_id, messages in sorted(removed.items()):
            self._report(subscriber_id, messages, known_too=known_too)
        self.removed = dict(removed)

    def _report(self, subscriber_id: str, messages: int, *, known_too: bool) -> None:
        if known_too or subscriber_id not in self.removed:
            log.warning(
                "removed_subscriber_has_queue",
                subscriber=subscriber_id,
                queue=work_queue(subscriber_id),
                messages=messages,
                hint="no worker consumes it (and bindings a worker did not see removed "
                "still route new events to it); move or replay what is left, then "
                "delete the queue",
            )

    def added(self, subscriber_id: str) -> None:
        """A pass added this subscriber (its lane exists)."""
        self._added.add(subscriber_id)
        self._gone.discard(subscriber_id)
        self.removed.pop(subscriber_id, None)  # configured again
        self._wake.set()

    def gone(self, subscriber_id: str) -> None:
        """A pass removed this subscriber (its lane is gone, its queues stay)."""
        self._gone.add(subscriber_id)
        self._added.discard(subscriber_id)
        self._wake.set()

    async def run(self) -> None:
        """Record and probe after each pass, the full check now and then; until cancelled."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.check_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_full - loop.time()))
            self._wake.clear()
            try:
                if loop.time() >= next_full:
                    next_full = loop.time() + self.check_seconds
                    await self._full_check()
                else:
                    await self._update()
            except Exception:
                # Never stop keeping the registry over one bad round (the next covers it).
                log.exception("registry_update_crashed")

    async def _update(self) -> None:
        added, self._added = self._added, set()
        gone, self._gone = self._gone, set()
        try:
            await asyncio.to_thread(record, self._broker, added)
            left = await asyncio.to_thread(queues_left, self._broker, gone)
        except BrokerError as exc:
            # Kept for the next try (the next pass or the full check covers them too).
            self._added |= added - self._gone
            self._gone |= gone - self._added
            log.warning("registry_update_failed", error=str(exc))
            return
        for subscriber_id in sorted(gone):
            if subscriber_id in self._lanes:
                continue  # added back meanwhile
            if subscriber_id in left:
                self._report(subscriber_id, left[subscriber_id], known_too=False)
                self.removed[subscriber_id] = left[subscriber_id]
            else:
                self.removed.pop(subscriber_id, None)

    async def _full_check(self) -> None:
        """Record every subscriber, report removed ones with queues."""
        added, gone = set(self._added), set(self._gone)
        try:
            removed = await asyncio.to_thread(
                reconcile_registry, self._broker, self._lanes.subscriber_ids
            )
        except BrokerError as exc:
            log.warning("registry_check_failed", error=str(exc))  # the next connect checks
            return
        # The check covered what was pending when it started.
        self._added -= added
        self._gone -= gone
        self.report_removed(removed, known_too=False)
