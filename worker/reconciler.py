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

The subscriber registry is kept beside the passes (worker.registry_keeper), so
that no change waits for it: a pass only hands over the ids it added or removed.

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
from worker.lanes import Lanes
from worker.pause import paused_among
from worker.reconcile_plan import ADDED, CHANGED, REMOVED, EndpointChange, plan_changes
from worker.registry_keeper import RegistryKeeper
from worker.subscriber_source import SourceSnapshot, SubscriberSource, SubscriberSpec

log = structlog.get_logger("worker")


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
        self._wake = asyncio.Event()
        self._channel: AmqpChannel | None = None
        self.registry = RegistryKeeper(broker, lanes)

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

    @property
    def removed(self) -> dict[str, int]:
        """Removed subscribers whose work queue still exists: id -> messages in it."""
        return self.registry.removed

    def report_removed(self, removed: Mapping[str, int], *, known_too: bool) -> None:
        """Keep and log the registry's removed subscribers (only new ones unless ``known_too``)."""
        self.registry.report_removed(removed, known_too=known_too)

    async def run(self, connection: AmqpConnection) -> None:
        """Reconcile now, then on notices and every poll interval; until cancelled."""
        self._wake.set()  # whatever changed while we were not connected
        registry = asyncio.ensure_future(self.registry.run())
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
        """Hand the pass's additions and removals to the registry keeper (never waited for)."""
        for change in changes:
            if change.kind == ADDED and change.id in self._lanes:
                self.registry.added(change.id)
            elif change.kind == REMOVED and change.id not in self._lanes:
                self.registry.gone(change.id)

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
