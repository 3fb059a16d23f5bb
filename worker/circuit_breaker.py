"""Per-subscriber circuit breaker: pure state, no I/O (the worker acts on its transitions).

CLOSED counts consecutive failures; at the threshold it goes OPEN (the worker
stops consuming the subscriber's queue, so its events wait there and burn no
attempts). After a cool-down it goes HALF_OPEN (the worker consumes one message
at a time): the first result decides, success CLOSES, failure re-OPENS with the
cool-down doubled up to the cap.

Results are matched to the state they were started in by a *ticket* (the epoch
at receive time): a delivery that began before the circuit opened and ends
during the probe must not decide the probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from config.subscribers import CircuitBreakerPolicy


class CircuitState(IntEnum):
    """A lane's breaker state; ``label`` names it in metrics and logs."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class CircuitBreaker:
    """The breaker of one subscriber; ``clock`` is injectable for tests."""

    # One per endpoint: without a __dict__ each is ~100 bytes smaller.
    __slots__ = (
        "_clock",
        "_opened_at",
        "consecutive_failures",
        "cooldown_seconds",
        "epoch",
        "policy",
        "state",
    )

    def __init__(
        self, policy: CircuitBreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.epoch = 0
        self.cooldown_seconds = policy.cooldown_seconds
        self._opened_at = 0.0

    def ticket(self) -> int:
        """Call when a message arrives; hand the value back to :meth:`record`."""
        return self.epoch

    def record(self, ticket: int, ok: bool) -> CircuitState | None:
        """Count one delivery result; return the new state if it changed."""
        if not self.policy.enabled or ticket != self.epoch:
            return None
        if ok:
            self.consecutive_failures = 0
            if self.state is CircuitState.HALF_OPEN:
                self.cooldown_seconds = self.policy.cooldown_seconds
                return self._enter(CircuitState.CLOSED)
            return None
        self.consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN:
            self.cooldown_seconds = min(self.cooldown_seconds * 2, self.policy.max_cooldown_seconds)
            return self._open()
        if (
            self.state is CircuitState.CLOSED
            and self.consecutive_failures >= self.policy.failure_threshold
        ):
            return self._open()
        return None

    def seconds_until_probe(self) -> float | None:
        """While OPEN, how long until a probe is due (0 when due); else None."""
        if self.state is not CircuitState.OPEN:
            return None
        return max(0.0, self._opened_at + self.cooldown_seconds - self._clock())

    def start_probe(self) -> CircuitState | None:
        """OPEN and cooled down: go HALF_OPEN (the worker then consumes one message)."""
        if self.seconds_until_probe() != 0.0:
            return None
        return self._enter(CircuitState.HALF_OPEN)

    def reset(self) -> CircuitState | None:
        """Close unconditionally (an operator resumed the subscriber)."""
        self.consecutive_failures = 0
        self.cooldown_seconds = self.policy.cooldown_seconds
        if self.state is CircuitState.CLOSED:
            return None
        return self._enter(CircuitState.CLOSED)

    def _open(self) -> CircuitState:
        self._opened_at = self._clock()
        return self._enter(CircuitState.OPEN)

    def _enter(self, state: CircuitState) -> CircuitState:
        self.state = state
        self.epoch += 1
        return state
