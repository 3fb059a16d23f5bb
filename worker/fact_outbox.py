"""Where the delivery code reports operational facts: one call, never a wait.

The delivery code reports a fact with one call (``note_dead_lettered``,
``note_paused``, ``note_circuit``).  While a fact emitter (worker.fact_emitter)
runs, the fact goes into its outbox (broker.outbox: bounded, published on a
connection of its own); when that is full (the broker is away for long) the
new fact is dropped and counted in ``webhook_operational_facts_dropped_total``:
a notice may then undercount, a delivery is never slowed or failed.

The sink is one per process (like the Prometheus metrics), so the hooks need
no plumbing through the lanes and the processor; without an emitter (tools,
unit tests) no fact is even built.
"""

from __future__ import annotations

import time
from typing import Protocol

from config.subscribers import Subscriber
from wire.operational_fact import FactKind, OperationalFact, reason_kind


class FactTaker(Protocol):
    """What takes the facts (the emitter's outbox): ``put`` never blocks, never raises."""

    def put(self, item: OperationalFact) -> None: ...


class FactSink:
    """The process's way out for facts: the running emitter's outbox, or nowhere."""

    def __init__(self) -> None:
        self._taker: FactTaker | None = None

    @property
    def attached(self) -> bool:
        """Whether an emitter takes the facts (otherwise they are not kept)."""
        return self._taker is not None

    def attach(self, taker: FactTaker) -> None:
        """An emitter starts: facts go to ``taker`` from now on."""
        self._taker = taker

    def detach(self) -> None:
        """The emitter stopped: facts are no longer built."""
        self._taker = None

    def put(self, fact: OperationalFact) -> None:
        """Pass ``fact`` on, if an emitter runs; never blocks, never raises."""
        taker = self._taker
        if taker is not None:
            taker.put(fact)


SINK = FactSink()


def _note(kind: FactKind, subscriber: Subscriber, event_id: str | None, reason: str | None) -> None:
    if SINK.attached:  # else nothing to build: no emitter takes facts in this process
        SINK.put(
            OperationalFact(kind, subscriber.account, subscriber.id, time.time(), event_id, reason)
        )


def note_dead_lettered(subscriber: Subscriber, event_id: str | None, reason: str) -> None:
    """A dead letter's publish was confirmed (``reason``: its DLQ reason; only its kind is kept)."""
    kind = reason_kind(reason)
    # A wrong-account event belongs to another merchant: not even its id is told.
    _note("dead_lettered", subscriber, None if kind == "wrong_account" else event_id, kind)


def note_paused(subscriber: Subscriber, event_id: str | None) -> None:
    """The receiver answered 410 Gone to ``event_id``: the endpoint is paused."""
    _note("paused", subscriber, event_id, "410 Gone")


def note_circuit(subscriber: Subscriber, state_label: str) -> None:
    """The endpoint's circuit changed; only ``open`` and ``closed`` are facts (not half-open)."""
    if state_label == "open":
        _note("circuit_opened", subscriber, None, None)
    elif state_label == "closed":
        _note("circuit_closed", subscriber, None, None)
