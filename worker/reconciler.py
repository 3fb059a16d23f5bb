"""Keeps a running worker in step with its subscriber source, without a restart.

Each pass reads the source (worker.subscriber_source) and, when its content
changed, applies the steps of worker.reconcile_plan:

* added: declare its queues and bindings (idempotent), check for a pause
  marker, start its lane (consuming within a second or so of the notice);
* changed: bind the new event keys and unbind the dropped ones on
  ``webhooks.events``; the lane takes the new subscriber (URL, secret,
  options: the next attempt uses them) and re-syncs its consumer (a new
  ``max_in_flight`` is a new prefetch, disabled or paused is no consumer);
* removed: unbind its event keys (no new events arrive), stop its lane.  Its
  queues stay, with whatever is queued, and the registry reports them
  (``removed_subscriber_has_queue``, ``/status``).

The subscriber registry (worker.registry) is kept apart from the passes, by a
task of its own, so that no change waits for it: after a pass it records the
ids just added (one small message) and probes the work queues of the ids just
removed; every ``_REGISTRY_CHECK_SECONDS`` it runs the full check (every id,
merged back into one message), which the worker also runs at every connect.
(The full check after every addition or removal took 15-20 s at 10,000
subscribers, and held every change made meanwhile back as long.)

A pass runs at every connect (changes made while disconnected), on every
change notice newer than the applied version, and every ``poll_seconds`` of
the source (RECONCILE_SECONDS; a few seconds for the file), so a lost notice or
a store outage heals by itself.  A step that fails is retried by the next pass:
the applied version only moves once every step succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping

import structlog

from broker.async_channel import AmqpChannel
from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, NotFoundError
from config.subscribers import RetryPolicy
from config.topology import EVENTS_EXCHANGE, build_topology, work_queue
from worker import metrics
from worker.change_notices import ChangeNotice
from worker.lane import Lanes
from worker.pause import paused_among
from worker.reconcile_plan import ADDED, CHANGED, REMOVED, EndpointChange, plan_changes
from worker.registry import queues_left, reconcile_registry, record
from worker.subscriber_source import SourceSnapshot, SubscriberSource, SubscriberSpec

log = structlog.get_logger("worker")

# How often a running worker runs the registry's full check (see the docstring).
_REGISTRY_CHECK_SECONDS = 300.0


class Reconciler:
    """Applies each new snapshot of ``source`` to the worker's lanes and the broker."""

    def __init__(
        self, source: SubscriberSource, lanes: Lanes, broker: BrokerUrl, retry: RetryPolicy
    ) -> None:
        self.source = source
        self._lanes = lanes
        self._broker = broker
        self._retry = retry
        self._applied: dict[str, SubscriberSpec] = {}
        self.version = 0
        self.fingerprint = ""
        # Removed subscribers whose work queue still exists: id -> messages in it.
        self.removed: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._channel: AmqpChannel | None = None
        # Ids added or removed by passes, for the registry task (see the docstring).
        self._registry_added: set[str] = set()
        self._registry_removed: set[str] = set()
        self._registry_wake = asyncio.Event()
        self.registry_check_seconds = _REGISTRY_CHECK_SECONDS

    def adopt(self, snapshot: SourceSnapshot) -> None:
        """Start from ``snapshot``, before the first connect (which declares all of it)."""
        for spec in snapshot.specs.values():
            self._lanes.add(spec.subscriber, spec.breaker, spec.state)
        self._applied = dict(snapshot.specs)
        self._mark_applied(snapshot)

    def notice(self, notice: ChangeNotice) -> None:
        """A change notice: reconcile now unless its version is already applied."""
        if notice.version > self.version:
            self._wake.set()

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

    async def run(self, connection: AmqpConnection) -> None:
        """Reconcile now, then on notices and every poll interval; until cancelled."""
        self._wake.set()  # whatever changed while we were not connected
        registry = asyncio.ensure_future(self._keep_registry())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.source.poll_seconds)
                self._wake.clear()
                try:
                    await self.reconcile(connection)
                except BrokerError as exc:
                    # The connection watcher reconnects if the connection is gone.
                    log.warning("reconcile_failed", error=str(exc))
                except Exception:
                    # Never stop following the configuration over one bad pass.
                    log.exception("reconcile_crashed")
        finally:
            registry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registry
            channel, self._channel = self._channel, None
            if channel is not None:
                with contextlib.suppress(BrokerError):
                    await channel.close()

    async def reconcile(self, connection: AmqpConnection) -> None:
        """One pass: read the source, apply what changed."""
        started = time.monotonic()
        snapshot = await self.source.load()
        metrics.CONFIG_LOADED_AT.set(snapshot.loaded_at)
        if snapshot.fingerprint != self.fingerprint:
            await self._apply(snapshot, connection, started)
        metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    async def _apply(
        self, snapshot: SourceSnapshot, connection: AmqpConnection, started: float
    ) -> None:
        changes = plan_changes(self._applied, snapshot.specs)
        added = [c.id for c in changes if c.kind == ADDED]
        paused = await asyncio.to_thread(paused_among, self._broker, added) if added else set()
        failed = 0
        for change in changes:
            try:
                await self._step(change, connection, paused)
            except (BrokerError, NotFoundError) as exc:
                failed += 1
                log.error(
                    "endpoint_change_failed",
                    subscriber=change.id,
                    change=change.kind,
                    error=str(exc),
                )
        self._note_for_registry(changes)
        if not failed:
            self._mark_applied(snapshot)
        log.info(
            "reconciled",
            version=snapshot.version,
            applied=not failed,
            added=len(added),
            changed=sum(1 for c in changes if c.kind == CHANGED),
            removed=sum(1 for c in changes if c.kind == REMOVED),
            failed=failed,
            subscribers=len(self._applied),
            seconds=round(time.monotonic() - started, 3),
        )

    def _note_for_registry(self, changes: Collection[EndpointChange]) -> None:
        """Hand the pass's additions and removals to the registry task (never waited for)."""
        for change in changes:
            if change.kind == ADDED and change.id in self._lanes:
                self._registry_added.add(change.id)
                self._registry_removed.discard(change.id)
                self.removed.pop(change.id, None)  # configured again
            elif change.kind == REMOVED and change.id not in self._lanes:
                self._registry_removed.add(change.id)
                self._registry_added.discard(change.id)
        if self._registry_added or self._registry_removed:
            self._registry_wake.set()

    async def _keep_registry(self) -> None:
        """Record additions, probe removals, and run the full check now and then."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.registry_check_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._registry_wake.wait(), timeout=max(0.0, next_full - loop.time())
                )
            self._registry_wake.clear()
            try:
                if loop.time() >= next_full:
                    next_full = loop.time() + self.registry_check_seconds
                    await self._check_registry()
                else:
                    await self._update_registry()
            except Exception:
                # Never stop keeping the registry over one bad round (the next covers it).
                log.exception("registry_update_crashed")

    async def _update_registry(self) -> None:
        added, self._registry_added = self._registry_added, set()
        gone, self._registry_removed = self._registry_removed, set()
        try:
            await asyncio.to_thread(record, self._broker, added)
            left = await asyncio.to_thread(queues_left, self._broker, gone)
        except BrokerError as exc:
            # Kept for the next try (the next pass or the full check covers them too).
            self._registry_added |= added - self._registry_removed
            self._registry_removed |= gone - self._registry_added
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

    async def _check_registry(self) -> None:
        """The registry's full check: record every subscriber, report removed ones with queues."""
        added, gone = set(self._registry_added), set(self._registry_removed)
        try:
            removed = await asyncio.to_thread(
                reconcile_registry, self._broker, self._lanes.subscriber_ids
            )
        except BrokerError as exc:
            log.warning("registry_check_failed", error=str(exc))  # the next connect checks
            return
        # The check covered what was pending when it started.
        self._registry_added -= added
        self._registry_removed -= gone
        self.report_removed(removed, known_too=False)

    async def _open_channel(self, connection: AmqpConnection) -> AmqpChannel:
        # A refused declaration closes its channel: what follows needs a new one.
        if self._channel is None or not self._channel.is_open:
            self._channel = await connection.channel()
        return self._channel

    async def _unbind(self, connection: AmqpConnection, queue: str, key: str) -> None:
        # An operator deleted the queue: its bindings went with it.
        with contextlib.suppress(NotFoundError):
            await (await self._open_channel(connection)).unbind(queue, EVENTS_EXCHANGE, key)

    async def _step(
        self, change: EndpointChange, connection: AmqpConnection, paused: set[str]
    ) -> None:
        queue = work_queue(change.id)
        if change.kind == ADDED:
            assert change.new is not None
            spec = change.new
            channel = await self._open_channel(connection)
            await channel.declare(build_topology([spec.subscriber], self._retry))
            if change.id in self._lanes:  # never two lanes for one queue
                lane = self._lanes.update(spec.subscriber, spec.breaker, spec.state)
            else:
                lane = self._lanes.add(spec.subscriber, spec.breaker, spec.state)
            if change.id in paused:
                lane.set_paused(True, "pause marker present")
            self._applied[change.id] = spec
            log.info(
                "endpoint_added",
                subscriber=change.id,
                account=spec.subscriber.account,
                host=spec.subscriber.host,
                events=list(spec.subscriber.events),
                state=spec.state,
            )
            await self._lanes.sync(lane)
        elif change.kind == CHANGED:
            assert change.new is not None
            spec = change.new
            # New keys first: an event matching both old and new never finds a gap.
            for key in change.bind:
                await (await self._open_channel(connection)).bind(queue, EVENTS_EXCHANGE, key)
            for key in change.unbind:
                await self._unbind(connection, queue, key)
            lane = self._lanes.update(spec.subscriber, spec.breaker, spec.state)
            self._applied[change.id] = spec
            log.info(
                "endpoint_changed",
                subscriber=change.id,
                fields=list(change.fields),
                state=spec.state,
                host=spec.subscriber.host,
            )
            self._log_bindings(change)
            await self._lanes.sync(lane)
        elif change.kind == REMOVED:
            for key in change.unbind:
                await self._unbind(connection, queue, key)
            await self._lanes.remove(change.id)
            del self._applied[change.id]
            log.info("endpoint_removed", subscriber=change.id, queue=queue, queue_kept=True)
            self._log_bindings(change)

    @staticmethod
    def _log_bindings(change: EndpointChange) -> None:
        if change.bind or change.unbind:
            log.info(
                "bindings_changed",
                subscriber=change.id,
                added=list(change.bind),
                removed=list(change.unbind),
            )

    def _mark_applied(self, snapshot: SourceSnapshot) -> None:
        self.version, self.fingerprint = snapshot.version, snapshot.fingerprint
        metrics.CONFIG_VERSION.set(snapshot.version)
        metrics.CONFIG_LOADED_AT.set(snapshot.loaded_at)
