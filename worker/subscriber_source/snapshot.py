"""What a subscriber source hands the worker: the subscribers it wants, at one version."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from config.subscriber_record import AnySubscriber, SubscriberRecord
from config.subscribers import CircuitBreakerPolicy

# A subscriber's state in the configuration (worker.lane consumes only ENABLED).
ENABLED = "enabled"
DISABLED = "disabled"  # enabled: false
PAUSED = "paused"  # paused in the endpoint store


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    """One subscriber as the configuration wants it: its fields, breaker and state.

    The subscriber is kept as its compact record (config.subscriber_record): a
    worker holds one spec per endpoint for as long as it runs.
    """

    subscriber: SubscriberRecord
    breaker: CircuitBreakerPolicy
    state: str = ENABLED

    @property
    def id(self) -> str:
        return self.subscriber.id

    @classmethod
    def of(
        cls, subscriber: AnySubscriber, defaults: CircuitBreakerPolicy, *, paused: bool = False
    ) -> SubscriberSpec:
        """The spec of (validated) ``subscriber``; its breaker: ``defaults`` with its own keys."""
        state = DISABLED if not subscriber.enabled else PAUSED if paused else ENABLED
        breaker = defaults.overridden_by(subscriber.circuit_breaker)
        return cls(SubscriberRecord.of(subscriber), breaker, state)


@dataclass(frozen=True)
class SourceSnapshot:
    """Every subscriber at one moment.

    ``version`` grows with every change (the store's version counter, or for the
    file the count of distinct contents loaded); ``fingerprint`` names the
    content, so an unchanged one needs no work; ``loaded_at`` is the Unix time
    the source was last read successfully (older while it cannot be read).
    """

    version: int
    fingerprint: str
    specs: dict[str, SubscriberSpec] = field(default_factory=dict)
    loaded_at: float = 0.0

    @classmethod
    def of(
        cls, version: int, fingerprint: str, specs: Iterable[SubscriberSpec], loaded_at: float
    ) -> SourceSnapshot:
        """A snapshot of ``specs``, keyed by subscriber id in the order given."""
        return cls(version, fingerprint, {spec.id: spec for spec in specs}, loaded_at)


class SubscriberSource(Protocol):
    """Where a worker's subscribers come from: the file or the endpoint store."""

    # How often the worker calls load() even without a change notice.
    poll_seconds: float

    async def load(self) -> SourceSnapshot:
        """The subscribers now; the last good set while the source cannot be read.

        Raises (ConfigError or StoreError) only when nothing was ever read.
        """
        ...

    def describe(self) -> str:
        """The source, for logs and /status (no password)."""
        ...

    def close(self) -> None:
        """Release what the source holds (database connections)."""
        ...
