"""Every Prometheus metric of the producer library, in one place.

They live in prometheus_client's default registry: a long-running producer
exposes them with ``prometheus_client.start_http_server(port)`` or on its own
``/metrics`` (README, "Operating it"). Label values are bounded: ``outcome``,
``event_type_class``, ``call`` and ``reason`` come from the fixed sets below;
never an account, an event id or anything from a payload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from config.errors import BrokerError, BrokerUnavailableError, PayloadError, UnroutableError
from wire.envelope import ORDER_MODELS

# Unlike worker/metrics.py this module does not call disable_created_metrics():
# that switch is process-wide, and a library must not change how its host
# application exports its own metrics.

# What became of one event handed to Publisher.publish or publish_many.
OUTCOMES = ("published", "unroutable", "nacked", "unavailable", "invalid")
# Event types are chosen by producers, so only the page's order events are
# labelled by name; every other type counts as "other".
EVENT_TYPE_CLASSES = (*ORDER_MODELS, "other")
CALLS = ("publish", "publish_many")
# Why SpoolingPublisher stored an event instead of publishing it: the broker was
# unreachable, it nacked, or earlier events were still spooled (order is kept).
SPOOL_REASONS = ("unavailable", "nacked", "behind_spooled")
# Why a spooled event was set aside in the spool file's rejected table.
REJECT_REASONS = ("unroutable", "invalid")

# From a quick confirm on a local broker to a whole retry budget (30 s by default).
_PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

EVENTS_PUBLISHED = Counter(
    "webhook_producer_events_published_total",
    "Events handed to the producer, by what became of them: published (confirmed), "
    "unroutable (no endpoint takes it), nacked (the broker refused it), unavailable "
    "(no broker after the retries), invalid (refused before sending).",
    ["event_type_class", "outcome"],
)
PUBLISH_DURATION = Histogram(
    "webhook_producer_publish_duration_seconds",
    "Duration of one publish (one event) or publish_many (one batch) call until the "
    "broker's confirms, failed calls included.",
    ["call"],
    buckets=_PUBLISH_BUCKETS,
)
SPOOL_DEPTH = Gauge(
    "webhook_producer_spool_depth",
    "Events waiting in the SQLite spools this process has open.",
)
SPOOLED = Counter(
    "webhook_producer_spooled_total",
    "Events written to a spool instead of being published, by reason "
    "(unavailable, nacked, behind_spooled).",
    ["reason"],
)
SPOOL_FLUSHED = Counter(
    "webhook_producer_spool_flushed_total",
    "Spooled events published once the broker took them.",
)
SPOOL_REJECTED = Counter(
    "webhook_producer_spool_rejected_total",
    "Spooled events set aside in the spool's rejected table, by reason (unroutable, invalid).",
    ["reason"],
)


def event_type_class(event_type: object) -> str:
    """The ``event_type_class`` label of an event type: an order event's name, or ``other``."""
    return event_type if isinstance(event_type, str) and event_type in ORDER_MODELS else "other"


def outcome_of(error: BaseException) -> str:
    """The ``outcome`` label of a failed publish.

    A channel the broker closed (e.g. access refused on the exchange) counts as
    ``nacked``: like a nack, the broker refused the event.
    """
    if isinstance(error, PayloadError):
        return "invalid"
    if isinstance(error, UnroutableError):
        return "unroutable"
    if isinstance(error, BrokerUnavailableError):
        return "unavailable"
    if isinstance(error, BrokerError):
        return "nacked"
    raise ValueError(f"not a publish outcome: {type(error).__name__}")


def count_event(event_type: object, outcome: str) -> None:
    """Count one event of ``event_type`` as ``outcome``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    EVENTS_PUBLISHED.labels(event_type_class(event_type), outcome).inc()


@contextmanager
def event_outcome(event_type: object) -> Iterator[None]:
    """Count the one event published inside the block: ``published``, or why it failed."""
    try:
        yield
    except (PayloadError, BrokerError) as exc:
        count_event(event_type, outcome_of(exc))
        raise
    count_event(event_type, "published")


@contextmanager
def timed(call: str) -> Iterator[None]:
    """Observe how long the block took as one ``call`` (``publish`` or ``publish_many``)."""
    if call not in CALLS:
        raise ValueError(f"unknown call {call!r}")
    started = time.monotonic()
    try:
        yield
    finally:
        PUBLISH_DURATION.labels(call).observe(time.monotonic() - started)
