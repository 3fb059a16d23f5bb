"""The worker's outbox of operational facts: a bounded buffer the delivery path never waits on.

The delivery code reports a fact with one call (``note_dead_lettered``,
``note_paused``, ``note_circuit``): it appends to an in-memory deque and
returns.  The fact emitter (worker.fact_emitter) publishes the outbox to the
broker on its own connection.  When the buffer is full (the broker is away
for long) the new fact is dropped, counted in
``webhook_operational_facts_dropped_total`` and logged at most once a minute:
a notice may then undercount, a delivery is never slowed or failed.

The outbox is one per process (like the Prometheus metrics), so the hooks need
no plumbing through the lanes and the processor; it only accepts facts while
an emitter is attached, so code that runs without one (tools, unit tests)
leaves nothing behind.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

import structlog

from config.subscriber_record import AnySubscriber
from wire.operational_fact import FactKind, OperationalFact, reason_kind
from worker import metrics

log = structlog.get_logger("worker")

DEFAULT_CAPACITY = 10_000
_DROP_LOG_SECONDS = 60.0


class FactOutbox:
    """Facts waiting to be published, oldest first; bounded."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self._facts: deque[OperationalFact] = deque()
        self._clock = clock
        self._wake: Callable[[], None] | None = None
        self._dropped_unlogged = 0
        self._last_drop_log = -_DROP_LOG_SECONDS

    def __len__(self) -> int:
        return len(self._facts)

    @property
    def attached(self) -> bool:
        """Whether an emitter takes the facts (otherwise they are not kept)."""
        return self._wake is not None

    def attach(self, wake: Callable[[], None]) -> None:
        """An emitter starts: ``wake`` is called (in the event loop) after each new fact."""
        self._wake = wake

    def detach(self) -> None:
        """The emitter stopped; facts still buffered are forgotten (the process ends)."""
        self._wake = None
        self._facts.clear()

    def put(self, fact: OperationalFact) -> None:
        """Queue ``fact``; never blocks, never raises."""
        wake = self._wake
        if wake is None:
            return
        if len(self._facts) >= self.capacity:
            self.count_dropped("buffer_full")
            return
        self._facts.append(fact)
        wake()

    def peek(self, limit: int) -> list[OperationalFact]:
        """Up to ``limit`` of the oldest facts, left in place."""
        return list(itertools.islice(self._facts, limit))

    def settle(self, taken: int, again: list[OperationalFact]) -> None:
        """Forget the ``taken`` oldest facts, except ``again``, which go back in front."""
        for _ in range(min(taken, len(self._facts))):
            self._facts.popleft()
        self._facts.extendleft(reversed(again))

    def count_dropped(self, reason: str, count: int = 1) -> None:
        """Count lost facts (buffer_full, queue_full, error); log once a minute at most."""
        metrics.OPERATIONAL_FACTS_DROPPED.labels(reason).inc(count)
        self._dropped_unlogged += count
        now = self._clock()
        if now - self._last_drop_log >= _DROP_LOG_SECONDS:
            log.warning(
                "operational_facts_dropped",
                dropped=self._dropped_unlogged,
                reason=reason,
                buffered=len(self._facts),
                capacity=self.capacity,
            )
            self._dropped_unlogged = 0
            self._last_drop_log = now


OUTBOX = FactOutbox()


def _note(
    kind: FactKind, subscriber: AnySubscriber, event_id: str | None, reason: str | None
) -> None:
    if OUTBOX.attached:  # else nothing to build: no emitter takes facts in this process
        OUTBOX.put(
            OperationalFact(kind, subscriber.account, subscriber.id, time.time(), event_id, reason)
        )


def note_dead_lettered(subscriber: AnySubscriber, event_id: str | None, reason: str) -> None:
    """A dead letter's publish was confirmed (``reason``: its DLQ reason; only its kind is kept)."""
    kind = reason_kind(reason)
    # A wrong-account event belongs to another merchant: not even its id is told.
    _note("dead_lettered", subscriber, None if kind == "wrong_account" else event_id, kind)


def note_paused(subscriber: AnySubscriber, event_id: str | None) -> None:
    """The receiver answered 410 Gone to ``event_id``: the endpoint is paused."""
    _note("paused", subscriber, event_id, "410 Gone")


def note_circuit(subscriber: AnySubscriber, state_label: str) -> None:
    """The endpoint's circuit changed; only ``open`` and ``closed`` are facts (not half-open)."""
    if state_label == "open":
        _note("circuit_opened", subscriber, None, None)
    elif state_label == "closed":
        _note("circuit_closed", subscriber, None, None)
