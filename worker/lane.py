"""One subscriber's lane: its circuit breaker, its pause, the consumer it wants.

A lane's consumer follows its state: none while disabled or paused in the
configuration, paused after a 410, or while the circuit is open (its events wait
in its queue and burn no attempts), a one-message probe while half-open, else
the subscriber's own in-flight budget.  Every lane together, and the consumers
they share, is worker.lanes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from config.subscriber_record import AnySubscriber
from worker import metrics
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.fact_outbox import note_circuit
from worker.subscriber_source.snapshot import ENABLED

log = structlog.get_logger("worker")

_CIRCUIT_EVENTS = {
    CircuitState.OPEN: "circuit_opened",
    CircuitState.HALF_OPEN: "circuit_half_open",
    CircuitState.CLOSED: "circuit_closed",
}


@dataclass(slots=True)
class Lane:
    """One subscriber's consumption: its breaker, its pause, its current consumer."""

    subscriber: AnySubscriber
    breaker: CircuitBreaker
    config_state: str = ENABLED  # or DISABLED, or PAUSED in the store: not consumed
    paused: bool = False
    marker_pending: bool = False  # 410 seen, marker being written: polls must not unpause
    tag: str | None = None
    prefetch: int = 0

    def wanted_prefetch(self) -> int:
        """0 = do not consume; 1 = probe; else the subscriber's own in-flight budget."""
        if self.config_state != ENABLED or self.paused:
            return 0
        if self.breaker.state is CircuitState.OPEN:
            return 0
        if self.breaker.state is CircuitState.HALF_OPEN:
            return 1
        return self.subscriber.max_in_flight

    def export_state(self) -> None:
        """Hand the lane's state to the metrics (exported only when it says something)."""
        metrics.set_lane_state(
            self.subscriber.id,
            self.breaker.state.label,
            paused=self.paused,
            disabled=self.config_state != ENABLED,
        )

    def note_transition(self, state: CircuitState) -> None:
        """Report a breaker transition on the metrics and in the log."""
        breaker = self.breaker
        self.export_state()
        metrics.instruments(self.subscriber.id).transition(state.label)
        note_circuit(self.subscriber, state.label)
        fields: dict[str, Any] = {"subscriber": self.subscriber.id}
        if state is CircuitState.OPEN:
            fields.update(
                consecutive_failures=breaker.consecutive_failures,
                cooldown_seconds=breaker.cooldown_seconds,
            )
        level = log.warning if state is CircuitState.OPEN else log.info
        level(_CIRCUIT_EVENTS[state], **fields)

    def set_paused(self, paused: bool, reason: str) -> None:
        """Pause or resume; a resumed subscriber starts with a closed circuit."""
        if self.paused == paused:
            return
        self.paused = paused
        self.export_state()
        if paused:
            log.warning(
                "subscriber_paused",
                subscriber=self.subscriber.id,
                reason=reason,
                resume_with=f"webhook-worker resume {self.subscriber.id}",
            )
            return
        log.info("subscriber_resumed", subscriber=self.subscriber.id, reason=reason)
        state = self.breaker.reset()
        if state is not None:
            self.note_transition(state)
