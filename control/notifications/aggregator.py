"""Facts gathered per endpoint into windows, and when each window may be sent (pure, no I/O).

The rate limit: at most one notice per endpoint per ``window_seconds``.  The
first fact about a quiet endpoint opens a window that is sent
``batch_seconds`` later (so facts that come together, such as a 410's pause
and its dead letter, make one notice); facts arriving while a notice was sent
less than ``window_seconds`` ago wait until then and go out together, with
counts.  So the first trouble is told within seconds, a storm costs one notice
a minute.

Each fact comes with a *token* (the broker message carrying it): a window
hands its tokens back when it is taken, and the caller acks them once the
notice is sent or given up.  Times are the caller's monotonic clock, so tests
drive it with a fake one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wire.operational_fact import FactKind, OperationalFact

T = TypeVar("T")
Key = tuple[str | None, str]  # (account, endpoint)


@dataclass
class Window(Generic[T]):
    """What happened to one endpoint since its last notice."""

    account: str | None
    endpoint: str
    send_at: float
    counts: Counter[FactKind] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    first_at: float | None = None
    last_at: float | None = None
    first_dead_letter: OperationalFact | None = None
    last_dead_letter: OperationalFact | None = None
    pause: OperationalFact | None = None
    last_circuit: OperationalFact | None = None
    tokens: list[T] = field(default_factory=list)

    def add(self, fact: OperationalFact, token: T) -> None:
        """Count ``fact``; keep the first and last of each kind by the time it happened."""
        self.counts[fact.kind] += 1
        self.tokens.append(token)
        self.first_at = fact.at if self.first_at is None else min(self.first_at, fact.at)
        self.last_at = fact.at if self.last_at is None else max(self.last_at, fact.at)
        if fact.kind == "dead_lettered":
            self.reasons[fact.reason or "other"] += 1
            if self.first_dead_letter is None or fact.at < self.first_dead_letter.at:
                self.first_dead_letter = fact
            if self.last_dead_letter is None or fact.at >= self.last_dead_letter.at:
                self.last_dead_letter = fact
        elif fact.kind == "paused":
            if self.pause is None or fact.at < self.pause.at:
                self.pause = fact
        elif self.last_circuit is None or fact.at >= self.last_circuit.at:
            self.last_circuit = fact

    @property
    def facts(self) -> int:
        """How many facts the window holds."""
        return len(self.tokens)


class Aggregator(Generic[T]):
    """Open windows per endpoint and the time each endpoint may next be told."""

    def __init__(self, *, window_seconds: float, batch_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.batch_seconds = batch_seconds
        self._open: dict[Key, Window[T]] = {}
        self._next_allowed: dict[Key, float] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, fact: OperationalFact, token: T, now: float) -> None:
        """Put ``fact`` in its endpoint's open window (opening one if need be)."""
        key = (fact.account, fact.endpoint)
        window = self._open.get(key)
        if window is None:
            send_at = max(now + self.batch_seconds, self._next_allowed.get(key, now))
            window = self._open[key] = Window(fact.account, fact.endpoint, send_at)
        window.add(fact, token)

    def next_send_at(self) -> float | None:
        """When the earliest open window is due, or None if none is open."""
        return min((w.send_at for w in self._open.values()), default=None)

    def take_due(self, now: float) -> list[Window[T]]:
        """Remove and return the windows due at ``now``; their endpoints wait a full window."""
        due = [w for w in self._open.values() if w.send_at <= now]
        for window in due:
            key = (window.account, window.endpoint)
            del self._open[key]
            self._next_allowed[key] = now + self.window_seconds
        # Endpoints quiet for a whole window need no memory of their last notice.
        for key in [k for k, t in self._next_allowed.items() if t <= now and k not in self._open]:
            del self._next_allowed[key]
        return due

    def drop_open(self) -> list[Window[T]]:
        """Forget every open window (their messages went back to the queue with the channel)."""
        dropped = list(self._open.values())
        self._open.clear()
        return dropped
