"""The difference between two subscriber snapshots, as steps: pure, no I/O.

worker.reconciler carries the steps out; keeping the diff apart makes it easy
to test on its own (tests/unit/test_reconciler.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from config.subscribers import Subscriber
from config.topology import event_binding_keys
from worker.subscriber_source.snapshot import PAUSED, SubscriberSpec

ADDED = "added"
CHANGED = "changed"
REMOVED = "removed"

_SUBSCRIBER_FIELDS = tuple(Subscriber.model_fields)


@dataclass(frozen=True)
class EndpointChange:
    """One subscriber's step.

    ``bind`` and ``unbind`` are binding keys on ``webhooks.events`` to add and
    to remove; ``fields`` names what changed (names only: never a value, so a
    log line cannot show a secret or a URL's query).
    """

    kind: str
    id: str
    old: SubscriberSpec | None = None
    new: SubscriberSpec | None = None
    bind: tuple[str, ...] = ()
    unbind: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


def _changed_fields(old: SubscriberSpec, new: SubscriberSpec) -> tuple[str, ...]:
    names = [
        name
        for name in _SUBSCRIBER_FIELDS
        if getattr(old.subscriber, name) != getattr(new.subscriber, name)
    ]
    # The file-wide breaker defaults can change the policy without the subscriber's own keys.
    if old.breaker != new.breaker and "circuit_breaker" not in names:
        names.append("circuit_breaker")
    if (old.state == PAUSED) != (new.state == PAUSED):
        names.append("paused")
    return tuple(names)


def plan_changes(
    applied: Mapping[str, SubscriberSpec], wanted: Mapping[str, SubscriberSpec]
) -> tuple[EndpointChange, ...]:
    """The steps from ``applied`` to ``wanted``: additions first (they wait for a
    consumer), then changes, then removals; unchanged subscribers have none."""
    added: list[EndpointChange] = []
    changed: list[EndpointChange] = []
    for subscriber_id, new in wanted.items():
        old = applied.get(subscriber_id)
        new_keys = event_binding_keys(new.subscriber)
        if old is None:
            added.append(EndpointChange(ADDED, subscriber_id, new=new, bind=new_keys))
        elif old != new:
            old_keys = event_binding_keys(old.subscriber)
            changed.append(
                EndpointChange(
                    CHANGED,
                    subscriber_id,
                    old=old,
                    new=new,
                    bind=tuple(k for k in new_keys if k not in old_keys),
                    unbind=tuple(k for k in old_keys if k not in new_keys),
                    fields=_changed_fields(old, new),
                )
            )
    removed = [
        EndpointChange(REMOVED, subscriber_id, old=old, unbind=event_binding_keys(old.subscriber))
        for subscriber_id, old in applied.items()
        if subscriber_id not in wanted
    ]
    return (*added, *changed, *removed)
