"""The endpoint store as a source: everything once, then only what changed.

The store is synchronous (SQLAlchemy), so every call runs in a thread.  The
first load reads every endpoint (``load_all``); later ones ask for what was
written after the version already known (``changed_since``), which is one
indexed query when nothing changed.  While the store cannot be read, the worker
keeps delivering with what it knows: one ``store_unavailable`` error per outage,
one ``store_available`` line when it answers again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from config.errors import StoreError, StoreUnavailableError
from config.settings import Settings
from config.subscribers import CircuitBreakerPolicy
from control.store.models import Changes, EndpointWithSecrets
from worker.subscriber_source.snapshot import SourceSnapshot, SubscriberSpec

if TYPE_CHECKING:
    from control.store.endpoints import EndpointStore

log = structlog.get_logger("worker")


class StoreSource:
    """Subscribers from the endpoint store (DATABASE_URL)."""

    def __init__(
        self, store: EndpointStore, *, poll_seconds: float, breaker: CircuitBreakerPolicy
    ) -> None:
        self._store = store
        self._breaker = breaker
        self.poll_seconds = poll_seconds
        self._specs: dict[str, SubscriberSpec] = {}
        self._snapshot: SourceSnapshot | None = None
        self._down_since: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreSource:
        """The store DATABASE_URL names (ConfigError if its key is missing)."""
        # Imported here: a worker on the subscriber file needs no database driver.
        from control.store.endpoints import EndpointStore

        store = EndpointStore.from_settings(settings)
        return cls(store, poll_seconds=settings.reconcile_seconds, breaker=settings.circuit_breaker)

    def describe(self) -> str:
        return f"endpoint store {self._store!r}"

    def close(self) -> None:
        self._store.close()

    async def load(self) -> SourceSnapshot:
        """Every endpoint now; the last known ones while the store cannot be read."""
        try:
            version = await self._read()
        except StoreError as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.error(
                    "store_unavailable",
                    error=str(exc),
                    unreachable=isinstance(exc, StoreUnavailableError),
                    keeping_version=None if self._snapshot is None else self._snapshot.version,
                    hint="deliveries go on with the endpoints already known",
                )
            if self._snapshot is None:
                raise
            return self._snapshot
        if self._down_since is not None:
            log.info("store_available", down_seconds=round(time.monotonic() - self._down_since, 1))
            self._down_since = None
        self._snapshot = SourceSnapshot.of(
            version, f"store-v{version}", self._specs.values(), time.time()
        )
        return self._snapshot

    async def _read(self) -> int:
        """Bring ``_specs`` up to date; return the store's version."""
        if self._snapshot is None:
            return await self._replace()
        try:
            changes = await asyncio.to_thread(self._store.changed_since, self._snapshot.version)
        except StoreUnavailableError:
            raise
        except StoreError:
            # Behind our version: the database was restored or replaced. Start over.
            return await self._replace()
        return self._merge(changes)

    async def _replace(self) -> int:
        """Read every endpoint; each becomes its spec as it is read (never all rows at once)."""
        known: dict[str, SubscriberSpec] = self._specs
        specs: dict[str, SubscriberSpec] = {}
        version = await asyncio.to_thread(
            self._store.load_each, lambda endpoint: self._put(endpoint, known, specs)
        )
        self._specs = specs
        return version

    def _merge(self, changes: Changes) -> int:
        for endpoint in changes.endpoints:
            self._put(endpoint, self._specs, self._specs)
        for endpoint_id in changes.deleted:
            self._specs.pop(endpoint_id, None)
        return changes.version

    def _put(
        self,
        endpoint: EndpointWithSecrets,
        known: dict[str, SubscriberSpec],
        specs: dict[str, SubscriberSpec],
    ) -> None:
        """Put ``endpoint``'s spec in ``specs``; an invalid one keeps its spec in ``known``."""
        endpoint_id = endpoint.endpoint.id
        try:
            spec = SubscriberSpec.of(
                endpoint.subscriber(), self._breaker, paused=endpoint.endpoint.paused
            )
        except ValidationError as exc:
            # The store validates input with the file's rules, so only a row
            # written by hand gets here: keep what we had rather than drop it
            # (dropping would unbind its queue).
            log.error(
                "endpoint_invalid",
                subscriber=endpoint_id,
                fields=sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}),
            )
            previous = known.get(endpoint_id)
            if previous is None:
                return
            spec = previous
        specs[endpoint_id] = spec
