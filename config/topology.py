"""RabbitMQ topology as data: every exchange, queue and binding, and their names.

Every exchange and queue name is built here and nowhere else.

Layout (see README, "Design: topology"):

* ``webhooks.events`` (topic): producers publish here, routing key =
  ``<account>.<event type>``.
* ``webhooks.<id>.work`` (quorum): one per subscriber, bound to ``webhooks.events``
  with its patterns behind its account (``<account>.order.*``; ``*.order.*`` only
  for an explicit all-accounts endpoint) and to ``webhooks.redeliver`` with its id.
* ``webhooks.<id>.dlq`` (quorum): one per subscriber, bound to ``webhooks.dead``
  with its id.
* ``webhooks.delay.<ms>ms`` (fanout exchange + quorum queue): one per retry delay,
  shared by all subscribers. The queue has a fixed TTL; expired messages are
  dead-lettered (at-least-once) to ``webhooks.redeliver`` keeping their routing
  key, which the worker sets to the subscriber id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.subscriber_record import AnySubscriber
from config.subscribers import RetryPolicy

EVENTS_EXCHANGE = "webhooks.events"
REDELIVER_EXCHANGE = "webhooks.redeliver"
DEAD_LETTER_EXCHANGE = "webhooks.dead"

# The control plane announces endpoint changes here (fanout); each worker binds a
# queue of its own, so a change reaches every replica at once.  Notices only
# hasten what the workers' periodic reconciliation with the store does anyway.
CONTROL_EXCHANGE = "webhooks.control"

# A worker that crashes on a message over and over must not loop forever: after
# this many deliveries the broker dead-letters it to the subscriber's DLQ.
WORK_QUEUE_DELIVERY_LIMIT = 20


# The delivery log: workers publish batches of attempt records to this fanout
# exchange; the recorder (control.delivery_log) consumes its one queue and writes
# them to the store.  Batches it cannot read are dead-lettered to the invalid
# queue, for an operator to look at, instead of looping.
DELIVERY_LOG_EXCHANGE = "webhooks.attempts"
DELIVERY_LOG_QUEUE = "webhooks.attempts"
DELIVERY_LOG_INVALID_QUEUE = "webhooks.attempts.invalid"
# The log must never fill the broker's disk while the recorder or its database is
# down: a disk alarm would block every publisher, deliveries included.  Past this
# size the queue refuses new batches (workers count the records they drop).  A
# policy with a lower max-length-bytes wins; a higher one does not.
DELIVERY_LOG_MAX_BYTES = 1024**3


def event_routing_key(account: str, event_type: str) -> str:
    """The routing key of an event on ``webhooks.events``: ``<account>.<event type>``."""
    return f"{account}.{event_type}"


def event_binding_keys(subscriber: AnySubscriber) -> tuple[str, ...]:
    """The binding keys of a subscriber's work queue: its patterns, scoped to its account.

    The broker then never routes another account's event to it; only an
    explicit ``all_accounts`` endpoint matches any first word.
    """
    scope = "*" if subscriber.all_accounts else subscriber.account
    return tuple(f"{scope}.{pattern}" for pattern in subscriber.events)


def work_queue(subscriber_id: str) -> str:
    """Name of the queue the worker consumes for ``subscriber_id``."""
    return f"webhooks.{subscriber_id}.work"


def dead_letter_queue(subscriber_id: str) -> str:
    """Name of ``subscriber_id``'s dead-letter queue (the only names ending in ``.dlq``)."""
    return f"webhooks.{subscriber_id}.dlq"


# Holds one message per subscriber id that ever had queues, so the worker can
# report a removed subscriber whose work queue still holds events.
REGISTRY_QUEUE = "webhooks.registry"


def pause_marker_queue(subscriber_id: str) -> str:
    """Name of the queue whose existence means ``subscriber_id`` is paused (410 Gone)."""
    return f"webhooks.{subscriber_id}.paused"


def delay_milliseconds(delay_seconds: float) -> int:
    """A retry delay as the whole milliseconds used in names and TTLs."""
    return max(1, round(delay_seconds * 1000))


def delay_exchange(delay_seconds: float) -> str:
    """Name of the fanout exchange in front of the delay queue for this delay."""
    return f"webhooks.delay.{delay_milliseconds(delay_seconds)}ms"


def delay_queue(delay_seconds: float) -> str:
    """Name of the delay queue holding messages for ``delay_seconds``."""
    return f"webhooks.delay.{delay_milliseconds(delay_seconds)}ms"


def subscriber_of_queue(queue: str) -> str | None:
    """The subscriber id in a work or dead-letter queue name, else None."""
    parts = queue.split(".")
    if len(parts) == 3 and parts[0] == "webhooks" and parts[2] in ("work", "dlq"):
        return parts[1]
    return None


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Everything to declare, in order: exchanges, then queues, then bindings."""

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def delivery_log_topology() -> Topology:
    """The delivery log's exchange and queues (declared by workers and recorders alike)."""
    return Topology(
        exchanges=(Exchange(DELIVERY_LOG_EXCHANGE, "fanout"),),
        queues=(
            Queue(
                DELIVERY_LOG_QUEUE,
                _quorum(
                    **{
                        "x-max-length-bytes": DELIVERY_LOG_MAX_BYTES,
                        "x-overflow": "reject-publish",
                        # The default exchange delivers to the queue named by the key.
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": DELIVERY_LOG_INVALID_QUEUE,
                    }
                ),
            ),
            Queue(DELIVERY_LOG_INVALID_QUEUE, _quorum()),
        ),
        bindings=(Binding(DELIVERY_LOG_EXCHANGE, DELIVERY_LOG_QUEUE, ""),),
    )


def build_topology(subscribers: Iterable[AnySubscriber], retry: RetryPolicy) -> Topology:
    """The full topology for these subscribers and retry delays (pure data, no I/O)."""
    exchanges = [
        Exchange(EVENTS_EXCHANGE, "topic"),
        Exchange(CONTROL_EXCHANGE, "fanout"),
        Exchange(REDELIVER_EXCHANGE, "direct"),
        Exchange(DEAD_LETTER_EXCHANGE, "direct"),
    ]
    queues: list[Queue] = []
    bindings: list[Binding] = []

    for delay in sorted(set(retry.delays_seconds)):
        exchanges.append(Exchange(delay_exchange(delay), "fanout"))
        queues.append(
            Queue(
                delay_queue(delay),
                _quorum(
                    **{
                        # One fixed TTL per queue: with per-message expiry a long
                        # delay at the head would hold back shorter ones behind it.
                        "x-message-ttl": delay_milliseconds(delay),
                        "x-dead-letter-exchange": REDELIVER_EXCHANGE,
                        # at-least-once: the broker keeps the message until the work
                        # queue confirms it, so an expiry never loses an event.
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
            )
        )
        bindings.append(Binding(delay_exchange(delay), delay_queue(delay), ""))

    for sub in subscribers:
        work, dlq = work_queue(sub.id), dead_letter_queue(sub.id)
        queues.append(
            Queue(
                work,
                _quorum(
                    **{
                        "x-delivery-limit": WORK_QUEUE_DELIVERY_LIMIT,
                        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                        "x-dead-letter-routing-key": sub.id,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    }
                ),
            )
        )
        queues.append(Queue(dlq, _quorum()))
        bindings.extend(Binding(EVENTS_EXCHANGE, work, key) for key in event_binding_keys(sub))
        bindings.append(Binding(REDELIVER_EXCHANGE, work, sub.id))
        bindings.append(Binding(DEAD_LETTER_EXCHANGE, dlq, sub.id))

    return Topology(tuple(exchanges), tuple(queues), tuple(bindings))


# Operational facts (an endpoint paused by a 410, its circuit opened or closed, an
# event dead-lettered): the workers publish them here and the notifier
# (control.notifications) turns them into signed notices. Two-word names, so
# they can never collide with a subscriber's three-word queue names.
OPERATIONAL_FACTS_EXCHANGE = "webhooks.operational-facts"
OPERATIONAL_FACTS_QUEUE = "webhooks.operational-facts"
# Bounded: with no notifier running, facts stop being accepted here (the
# workers count them as dropped) instead of filling the broker's disk.
OPERATIONAL_FACTS_MAX_LENGTH = 100_000


def operational_facts_topology() -> Topology:
    """The facts exchange and queue, declared by workers and notifier alike.

    ``x-single-active-consumer``: with several notifier replicas one consumes
    and the others stand by, so a notice is never sent twice in parallel and
    the per-endpoint rate limit holds across replicas.
    """
    queue = Queue(
        OPERATIONAL_FACTS_QUEUE,
        _quorum(
            **{
                "x-single-active-consumer": True,
                "x-max-length": OPERATIONAL_FACTS_MAX_LENGTH,
                "x-overflow": "reject-publish",
            }
        ),
    )
    return Topology(
        (Exchange(OPERATIONAL_FACTS_EXCHANGE, "fanout"),),
        (queue,),
        (Binding(OPERATIONAL_FACTS_EXCHANGE, OPERATIONAL_FACTS_QUEUE, ""),),
    )
