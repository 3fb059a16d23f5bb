"""A validated subscriber as a worker keeps it: the model's fields, in a tenth of the memory.

A worker holds one subscriber per endpoint for as long as it runs (10,000 of
them with the endpoint store).  As a pydantic model each costs ~1.2 KB: an
instance dict and a set of the fields given, besides the values
(docs/scaling.md).  The record is a frozen slotted dataclass of the very same
fields, built only from a :class:`~config.subscribers.Subscriber` that passed
validation (:meth:`SubscriberRecord.of`), so the rules stay in one place; its
methods are the model's own (``SubscriberMethods``).  Secrets stay ``SecretStr``
(never shown by a repr); endpoints with the same event selection share one
tuple of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from pydantic import SecretStr

from config.subscribers import CircuitBreakerOverride, Subscriber, SubscriberMethods

# Most endpoints select the same few patterns ("order.*"): one tuple for each
# selection, instead of a tuple and its strings per endpoint (~110 bytes each).
# Bounded, as the selections are the API users' input: past the bound a
# selection is kept as it comes.
_SHARED_SELECTIONS_MAX = 1024
_shared_selections: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared(events: tuple[str, ...]) -> tuple[str, ...]:
    known = _shared_selections.get(events)
    if known is not None:
        return known
    if len(_shared_selections) < _SHARED_SELECTIONS_MAX:
        _shared_selections[events] = events
    return events


@dataclass(frozen=True, slots=True)
class SubscriberRecord(SubscriberMethods):
    """One receiving endpoint as validated by :class:`~config.subscribers.Subscriber`."""

    id: str
    account: str | None
    all_accounts: bool
    url: str
    secret: SecretStr
    previous_secret: SecretStr | None
    events: tuple[str, ...]
    enabled: bool
    timeout_seconds: float
    connect_timeout_seconds: float
    max_in_flight: int
    standard_webhooks: bool
    circuit_breaker: CircuitBreakerOverride | None

    @classmethod
    def of(cls, subscriber: Subscriber | SubscriberRecord) -> SubscriberRecord:
        """The record of a validated subscriber (a record is already one)."""
        if isinstance(subscriber, SubscriberRecord):
            return subscriber
        return cls(
            id=subscriber.id,
            account=subscriber.account,
            all_accounts=subscriber.all_accounts,
            url=subscriber.url,
            secret=subscriber.secret,
            previous_secret=subscriber.previous_secret,
            events=_shared(subscriber.events),
            enabled=subscriber.enabled,
            timeout_seconds=subscriber.timeout_seconds,
            connect_timeout_seconds=subscriber.connect_timeout_seconds,
            max_in_flight=subscriber.max_in_flight,
            standard_webhooks=subscriber.standard_webhooks,
            circuit_breaker=subscriber.circuit_breaker,
        )


# What code that only reads a subscriber takes: the model, or a worker's record of it.
AnySubscriber: TypeAlias = Subscriber | SubscriberRecord
