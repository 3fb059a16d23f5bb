"""Every Prometheus metric of the worker, in one place.

Label values are bounded: ``subscriber`` comes from the configured subscribers
(the file or the endpoint store; a removed one's series are dropped), ``event``
from the event types producers use (invalid ones become ``"invalid"``),
``outcome``, ``status`` and ``reason`` from the fixed sets below.

Per-subscriber series exist only for subscribers that say something: from a
subscriber's first message in this process on (``instruments``), or while its
state is not the default one (circuit closed, not paused, not disabled; see
``set_lane_state``).  An idle endpoint costs no series, no memory for metric
children and no render time: with 10,000 endpoints, five samples each were
50,000 samples and 0.7 s per scrape (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

# No `<name>_created` series next to every counter and histogram child: they
# double the series count and nothing here reads them (rate() and increase()
# handle counter resets without them). Process-wide, set before any is exported.
disable_created_metrics()  # type: ignore[no-untyped-call]

OUTCOMES = ("success", "http_error", "timeout", "connection_error", "forbidden_address")
# HTTP status of an attempt as a label: the class, except for the codes that mean
# something on their own (410 Gone pauses the subscriber, 429 asks us to slow
# down); "none" when no HTTP answer came (timeout, connection error, forbidden
# address); "other" for a code outside 200-599, which no conforming server sends.
STATUS_LABELS = ("2xx", "3xx", "4xx", "5xx", "410", "429", "none", "other")
_STATUSES_OF_THEIR_OWN = {410: "410", 429: "429"}
DEAD_LETTER_REASONS = ("exhausted", "poison", "retry_after_too_long", "gone")
# The circuit breaker's states (worker.circuit_breaker.CircuitState labels): one
# webhook_circuit_state series per state, so that sums over replicas make sense.
CIRCUIT_STATES = ("closed", "open", "half_open")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def status_label(status: int) -> str:
    """The ``status`` label value for an HTTP status code (0: no HTTP answer)."""
    if status <= 0:
        return "none"
    own = _STATUSES_OF_THEIR_OWN.get(status)
    if own is not None:
        return own
    if 200 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Delivery attempts by subscriber, event type, outcome and HTTP status "
    "(2xx, 3xx, 4xx, 5xx, 410, 429, none = no HTTP answer, other).",
    ["subscriber", "event", "outcome", "status"],
)
ATTEMPT_DURATION = Histogram(
    "webhook_attempt_duration_seconds",
    "Duration of one HTTP delivery attempt, from request start to response or error.",
    ["subscriber"],
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "webhook_end_to_end_latency_seconds",
    "Time from the event's timestamp to its successful delivery (retries included).",
    ["subscriber"],
    buckets=_END_TO_END_BUCKETS,
)
IN_FLIGHT = Gauge(
    "webhook_in_flight",
    "Messages received from the broker and not yet settled.",
    ["subscriber"],
)
RETRIES_SCHEDULED = Counter(
    "webhook_retries_scheduled_total",
    "Failed attempts moved to a delay queue, by the attempt they wait for.",
    ["subscriber", "attempt"],
)
DEAD_LETTERED = Counter(
    "webhook_dead_lettered_total",
    "Messages moved to a dead-letter queue, by reason.",
    ["subscriber", "reason"],
)
BROKER_RECONNECTS = Counter(
    "webhook_broker_reconnects_total",
    "Times the worker lost its broker connection and connected again.",
)
READY = Gauge(
    "webhook_worker_ready",
    "1 while connected to the broker and consuming, else 0.",
)
CONSUMERS = Gauge(
    "webhook_consumers",
    "Work queues this worker is consuming.",
)
CIRCUIT_STATE = Gauge(
    "webhook_circuit_state",
    "Circuit breaker of each subscriber: 1 for the state it is in, 0 for the others "
    "(closed; open = not consuming; half_open = probing). Summed over replicas: how "
    "many are in each state.",
    ["subscriber", "state"],
)
CIRCUIT_TRANSITIONS = Counter(
    "webhook_circuit_transitions_total",
    "Circuit breaker state changes, by the state entered (closed, open, half_open).",
    ["subscriber", "state"],
)
SUBSCRIBER_PAUSED = Gauge(
    "webhook_subscriber_paused",
    "1 while a subscriber is paused (it answered 410 Gone) until an operator resumes it.",
    ["subscriber"],
)
SUBSCRIBER_DISABLED = Gauge(
    "webhook_subscriber_disabled",
    "1 while the configuration keeps a subscriber from being consumed on purpose "
    "(enabled: false, or paused in the endpoint store); its events wait in its queue.",
    ["subscriber"],
)

CONFIG_VERSION = Gauge(
    "webhook_config_version",
    "Version of the subscriber configuration this worker applied: the endpoint store's "
    "version, or with the subscriber file the count of distinct contents loaded.",
)
CONFIG_LOADED_AT = Gauge(
    "webhook_config_loaded_timestamp_seconds",
    "Unix time the worker last read its subscribers successfully (the store or the "
    "file); its age grows while the store is unreachable.",
)
RECONCILE_DURATION = Histogram(
    "webhook_reconcile_seconds",
    "One reconciliation: reading the subscribers and applying what changed.",
    buckets=_RECONCILE_BUCKETS,
)

# Operational facts (worker.fact_emitter): published for the notifier, or lost
# because the outbox was full (buffer_full) or the broker's bounded facts queue
# refused them (queue_full: no notifier is consuming), a bug (error), or still
# unpublished when the worker stopped (shutdown).
OPERATIONAL_FACTS_PUBLISHED = Counter(
    "webhook_operational_facts_published_total",
    "Operational facts (paused, circuit opened/closed, dead-lettered) confirmed by the broker.",
)
OPERATIONAL_FACTS_DROPPED = Counter(
    "webhook_operational_facts_dropped_total",
    "Operational facts lost before the notifier: buffer_full, queue_full, error or shutdown.",
    ["reason"],
)


def set_circuit_state(subscriber: str, state: str) -> None:
    """Export ``subscriber``'s breaker as in ``state``: that series 1, the others 0."""
    if state not in CIRCUIT_STATES:
        raise ValueError(f"unknown circuit state {state!r}")
    for each in CIRCUIT_STATES:
        CIRCUIT_STATE.labels(subscriber, each).set(1 if each == state else 0)


class SubscriberInstruments:
    """One subscriber's metric children, made on its first message and dropped with it.

    Looked up once per message (a ``labels()`` lookup costs per call); the
    children it made are all known here, so ``forget_subscriber`` can remove
    counters and histograms too, not only gauges.
    """

    __slots__ = (
        "_deliveries",
        "_made",
        "attempt_duration",
        "end_to_end",
        "in_flight",
        "subscriber_id",
    )

    def __init__(self, subscriber_id: str) -> None:
        self.subscriber_id = subscriber_id
        self.in_flight = IN_FLIGHT.labels(subscriber_id)
        self.attempt_duration = ATTEMPT_DURATION.labels(subscriber_id)
        self.end_to_end = END_TO_END_LATENCY.labels(subscriber_id)
        # (family, label values after the subscriber) -> child
        self._made: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._deliveries: dict[tuple[str, str, int], Any] = {}

    def _child(self, family: MetricWrapperBase, *labels: str) -> Any:
        key = (family, labels)
        child = self._made.get(key)
        if child is None:
            child = self._made[key] = family.labels(self.subscriber_id, *labels)
        return child

    def delivered(self, event_label: str, outcome: str, status: int) -> None:
        """Count one attempt (``status`` 0: no HTTP answer)."""
        # Keyed by the raw status: the hot path skips status_label().
        key = (event_label, outcome, status)
        child = self._deliveries.get(key)
        if child is None:
            labels = (event_label, outcome, status_label(status))
            child = self._deliveries[key] = self._child(DELIVERIES, *labels)
        child.inc()

    def retry_scheduled(self, attempt: int) -> None:
        self._child(RETRIES_SCHEDULED, str(attempt)).inc()

    def dead_lettered(self, reason: str) -> None:
        self._child(DEAD_LETTERED, reason).inc()

    def transition(self, state: str) -> None:
        self._child(CIRCUIT_TRANSITIONS, state).inc()

    def remove(self) -> None:
        """Drop every series made here (a removed subscriber's)."""
        for family, labels in (
            *self._made,
            (IN_FLIGHT, ()),
            (ATTEMPT_DURATION, ()),
            (END_TO_END_LATENCY, ()),
        ):
            with contextlib.suppress(KeyError):
                family.remove(self.subscriber_id, *labels)
        self._made.clear()
        self._deliveries.clear()


# A lane's state as its gauges show it: (circuit state, paused, disabled).
LaneState = tuple[str, bool, bool]
_DEFAULT_STATE: LaneState = ("closed", False, False)
# One tuple per distinct state, shared by every lane in it (10,000 lanes, 12 states).
_STATES: dict[LaneState, LaneState] = {_DEFAULT_STATE: _DEFAULT_STATE}
_lane_states: dict[str, LaneState] = {}
_shown: set[str] = set()  # subscribers whose state gauges are exported
_instruments: dict[str, SubscriberInstruments] = {}


def instruments(subscriber: str) -> SubscriberInstruments:
    """``subscriber``'s metric children; the first call also exports its state gauges."""
    found = _instruments.get(subscriber)
    if found is None:
        found = _instruments[subscriber] = SubscriberInstruments(subscriber)
        if subscriber not in _shown:
            _show(subscriber, _lane_states.get(subscriber, _DEFAULT_STATE))
    return found


def set_lane_state(subscriber: str, circuit: str, *, paused: bool, disabled: bool) -> None:
    """Record a lane's state; exported once it is not the default or the lane is in use."""
    if circuit not in CIRCUIT_STATES:
        raise ValueError(f"unknown circuit state {circuit!r}")
    state = _STATES.setdefault((circuit, paused, disabled), (circuit, paused, disabled))
    _lane_states[subscriber] = state
    if subscriber in _shown or state is not _DEFAULT_STATE:
        _show(subscriber, state)


def _show(subscriber: str, state: LaneState) -> None:
    circuit, paused, disabled = state
    _shown.add(subscriber)
    set_circuit_state(subscriber, circuit)
    SUBSCRIBER_PAUSED.labels(subscriber).set(1 if paused else 0)
    SUBSCRIBER_DISABLED.labels(subscriber).set(1 if disabled else 0)


def forget_subscriber(subscriber: str) -> None:
    """Drop a removed subscriber's series, so endpoint churn does not grow them.

    A message of it still in flight may make some again (bounded by its
    in-flight budget); a counter that vanishes with its endpoint is fine for
    ``rate()``.
    """
    _lane_states.pop(subscriber, None)
    _shown.discard(subscriber)
    for each in CIRCUIT_STATES:
        with contextlib.suppress(KeyError):
            CIRCUIT_STATE.remove(subscriber, each)
    for gauge in (SUBSCRIBER_PAUSED, SUBSCRIBER_DISABLED):
        with contextlib.suppress(KeyError):
            gauge.remove(subscriber)
    made = _instruments.pop(subscriber, None)
    if made is not None:
        made.remove()


# The delivery log (worker.attempt_log): records leave the worker in batches,
# off the delivery path; these say whether they all got out.
DELIVERY_LOG_PUBLISHED = Counter(
    "webhook_delivery_log_published_total",
    "Attempt records the broker confirmed into the delivery log queue.",
)
DELIVERY_LOG_DROPPED = Counter(
    "webhook_delivery_log_dropped_total",
    "Attempt records given up without reaching the broker, by reason (buffer_full: "
    "the broker pushed back or was away for longer than the buffer holds; shutdown: "
    "still waiting when the worker stopped; error: a batch that could not be encoded). "
    "Deliveries are never held back for them.",
    ["reason"],
)
DELIVERY_LOG_REFUSED = Counter(
    "webhook_delivery_log_refused_batches_total",
    "Batches of attempt records the broker refused (the delivery log queue is full, or "
    "unroutable); their records wait in the worker's buffer and are sent again.",
)
DELIVERY_LOG_BUFFERED = Gauge(
    "webhook_delivery_log_buffered",
    "Attempt records waiting in the worker for a batch or for the broker's confirm.",
)
