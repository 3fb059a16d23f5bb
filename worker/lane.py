"""Each subscriber's lane: its consumer and prefetch, its circuit breaker, its pause.

A lane's consumer follows its state: none while disabled or paused in the
configuration, paused after a 410, or while the circuit is open (its events wait
in its queue and burn no attempts), a one-message probe while half-open, else
the subscriber's own in-flight budget.  Lanes come and go as the configuration
changes (worker.reconciler); a message already received keeps its lane.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from broker.async_channel import AmqpChannel, Message
from broker.url import BrokerUrl
from config.errors import BrokerError
from config.subscribers import CircuitBreakerPolicy, Subscriber
from config.topology import work_queue
from worker import metrics
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.fact_outbox import note_circuit, note_paused
from worker.pause import mark_paused, paused_among
from worker.processor import Settlement
from worker.retry import DeadLetter
from worker.subscriber_source.snapshot import ENABLED

log = structlog.get_logger("worker")

_CIRCUIT_EVENTS = {
    CircuitState.OPEN: "circuit_opened",
    CircuitState.HALF_OPEN: "circuit_half_open",
    CircuitState.CLOSED: "circuit_closed",
}
# How often open circuits are checked for a due probe.
_CIRCUIT_TICK_SECONDS = 0.2
# Consumers started per round trip at start-up (see Lanes.start_consuming): big
# enough that 10,000 lanes take a few dozen round trips, small enough that one
# window's frames (~100 bytes each) and the broker's work on them stay short.
_CONSUME_WINDOW = 500

MessageHandler = Callable[["Lane", Message], None]


def _refuse(_lane: Lane, _message: Message) -> None:
    raise RuntimeError("a consumer started before the worker was serving")


@dataclass(slots=True)
class Lane:
    """One subscriber's consumption: its breaker, its pause, its current consumer."""

    subscriber: Subscriber
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


class Lanes:
    """Every subscriber's lane, and the one consumer channel they share while connected."""

    def __init__(
        self, broker: BrokerUrl, *, pause_poll_seconds: float, full_pause_check_every: int = 6
    ) -> None:
        self._broker = broker
        self._pause_poll = pause_poll_seconds
        # Every marker is checked at every n-th poll (announcements cover the rest:
        # worker.pause); paused subscribers' markers at every poll.
        self._full_check_every = max(1, full_pause_check_every)
        self._polls = 0
        self._lanes: dict[str, Lane] = {}
        self._consumer: AmqpChannel | None = None
        self._handler: MessageHandler = _refuse
        # basic.qos applies to the consumers created after it on the channel, so a
        # qos + consume pair must not interleave with another lane's.
        self._consume_lock = asyncio.Lock()

    def add(self, subscriber: Subscriber, policy: CircuitBreakerPolicy, config_state: str) -> Lane:
        """A new lane (not consuming yet: :meth:`sync` starts it when connected)."""
        lane = Lane(subscriber, CircuitBreaker(policy), config_state=config_state)
        self._lanes[subscriber.id] = lane
        lane.export_state()
        return lane

    def update(
        self, subscriber: Subscriber, policy: CircuitBreakerPolicy, config_state: str
    ) -> Lane:
        """Replace a lane's subscriber and breaker policy; the next attempt uses them.

        Call :meth:`sync` next: a changed state or in-flight budget changes the
        consumer.  The breaker keeps its state, except that a breaker switched
        off closes (nothing would ever close it again).
        """
        lane = self._lanes[subscriber.id]
        lane.subscriber, lane.config_state = subscriber, config_state
        lane.breaker.policy = policy
        if not policy.enabled:
            state = lane.breaker.reset()
            if state is not None:
                lane.note_transition(state)
        lane.export_state()
        return lane

    async def remove(self, subscriber_id: str) -> None:
        """Cancel the lane's consumer and forget it; its queue keeps whatever is left."""
        lane = self._lanes.pop(subscriber_id, None)
        if lane is None:
            return
        async with self._consume_lock:
            tag, lane.tag, lane.prefetch = lane.tag, None, 0
            if tag is not None and self._consumer is not None:
                try:
                    await self._consumer.cancel(tag)
                except BrokerError as exc:
                    # The channel is going away: its consumers go with it.
                    log.warning("consumer_change_failed", subscriber=subscriber_id, error=str(exc))
            metrics.CONSUMERS.set(self.consuming)
        metrics.forget_subscriber(subscriber_id)

    def __iter__(self) -> Iterator[Lane]:
        return iter(self._lanes.values())

    def __getitem__(self, subscriber_id: str) -> Lane:
        return self._lanes[subscriber_id]

    def __contains__(self, subscriber_id: object) -> bool:
        return subscriber_id in self._lanes

    @property
    def subscriber_ids(self) -> list[str]:
        """The configured subscribers' ids, in configuration order."""
        return list(self._lanes)

    @property
    def subscribers(self) -> list[Subscriber]:
        """The configured subscribers, as the lanes have them now."""
        return [lane.subscriber for lane in self._lanes.values()]

    @property
    def consuming(self) -> int:
        """How many lanes have a consumer right now."""
        return sum(1 for lane in self._lanes.values() if lane.tag is not None)

    async def start_consuming(self, consumer: AmqpChannel, handler: MessageHandler) -> None:
        """Give every lane the consumer its state asks for on ``consumer``; raises BrokerError.

        Pipelined, a window of lanes at a time (one round trip per window and
        prefetch value, instead of one per lane); between windows the lock is
        let go, so breaker changes and the reconciler's steps are not held up.
        """
        self._consumer = consumer
        self._handler = handler
        # A copy: the reconciler may add or remove lanes while this awaits.
        lanes = list(self._lanes.values())
        for start in range(0, len(lanes), _CONSUME_WINDOW):
            await self._start_window(lanes[start : start + _CONSUME_WINDOW])

    async def _start_window(self, window: list[Lane]) -> None:
        async with self._consume_lock:
            consumer = self._consumer
            if consumer is None:
                return
            # Lanes removed meanwhile, or given their consumer by sync(), are skipped.
            due = [
                lane
                for lane in window
                if self._lanes.get(lane.subscriber.id) is lane
                and lane.tag is None
                and lane.wanted_prefetch()
            ]
            due.sort(key=Lane.wanted_prefetch)
            wanted = [lane.wanted_prefetch() for lane in due]
            tags = await consumer.consume_many(
                [
                    (work_queue(lane.subscriber.id), partial(self._handler, lane), prefetch)
                    for lane, prefetch in zip(due, wanted, strict=True)
                ]
            )
            for lane, tag, prefetch in zip(due, tags, wanted, strict=True):
                lane.tag, lane.prefetch = tag, prefetch
            metrics.CONSUMERS.set(self.consuming)

    def forget_consumers(self) -> None:
        """The channel is gone, and its consumer tags with it."""
        self._consumer = None
        for lane in self._lanes.values():
            lane.tag, lane.prefetch = None, 0
        metrics.CONSUMERS.set(0)

    async def stop_consuming(self, consumer: AmqpChannel) -> None:
        """Cancel every consumer for good; messages already received are still settled."""
        self._consumer = None  # no circuit change may start a consumer now
        async with self._consume_lock:
            for lane in list(self._lanes.values()):
                if lane.tag is not None:
                    with contextlib.suppress(BrokerError):
                        await consumer.cancel(lane.tag)
                lane.tag, lane.prefetch = None, 0
        metrics.CONSUMERS.set(0)

    async def sync(self, lane: Lane) -> None:
        """Make ``lane``'s consumer match its state: none, a one-message probe, or full.

        Cancelling leaves the subscriber's events in its queue: no attempt is
        spent while the circuit is open. Messages already received are settled
        as usual. Errors are logged and left to the connection watcher.
        """
        async with self._consume_lock:
            consumer = self._consumer
            if consumer is None or self._lanes.get(lane.subscriber.id) is not lane:
                return  # not connected, or the lane was removed meanwhile
            wanted = lane.wanted_prefetch()
            try:
                if lane.tag is not None and lane.prefetch != wanted:
                    tag, lane.tag, lane.prefetch = lane.tag, None, 0
                    await consumer.cancel(tag)
                if wanted and lane.tag is None:
                    lane.tag = await consumer.consume(
                        work_queue(lane.subscriber.id),
                        partial(self._handler, lane),
                        prefetch=wanted,
                    )
                    lane.prefetch = wanted
            except BrokerError as exc:
                log.warning("consumer_change_failed", subscriber=lane.subscriber.id, error=str(exc))
            metrics.CONSUMERS.set(self.consuming)

    async def settle(
        self, lane: Lane, ticket: int, settled: Settlement, event_id: str | None
    ) -> None:
        """Act on a settled attempt: pause if the retry decision says so, else feed the breaker."""
        step = settled.step
        if isinstance(step, DeadLetter) and step.pauses_subscriber:
            await self._pause_for_gone(lane, event_id)
            return
        state = lane.breaker.record(ticket, settled.result.ok)
        if state is not None:
            lane.note_transition(state)
            await self.sync(lane)

    async def supervise(self) -> None:
        """Start due probes; resume subscribers whose pause an operator lifted."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self._pause_poll
        while True:
            await asyncio.sleep(_CIRCUIT_TICK_SECONDS)
            for lane in list(self._lanes.values()):
                if lane.breaker.start_probe() is not None:
                    lane.note_transition(CircuitState.HALF_OPEN)
                    await self.sync(lane)
            if loop.time() >= next_poll:
                next_poll = loop.time() + self._pause_poll
                self._polls += 1
                await self._poll_pauses(full=self._polls % self._full_check_every == 0)

    async def check_marker(self, subscriber_id: str) -> None:
        """A pause marker was created or deleted somewhere: follow it now."""
        lane = self._lanes.get(subscriber_id)
        if lane is not None:
            await self._follow_markers([lane])

    async def _poll_pauses(self, *, full: bool = True) -> None:
        """Resume paused subscribers whose marker is gone; when ``full``, also pause those
        that have one (a 410 on another replica, the API) whose announcement was lost."""
        await self._follow_markers([lane for lane in self._lanes.values() if full or lane.paused])

    async def _follow_markers(self, lanes: list[Lane]) -> None:
        """Pause where a marker is, resume where none is: one pipelined check (worker.pause)."""
        if not lanes:
            return
        # A lane paused or resumed while the check ran (a 410 here) keeps its new state.
        before = {lane.subscriber.id: lane.paused for lane in lanes}
        try:
            marked = await asyncio.to_thread(
                paused_among, self._broker, [lane.subscriber.id for lane in lanes]
            )
        except BrokerError as exc:
            log.warning("pause_check_failed", error=str(exc))
            return
        for lane in lanes:
            if lane.marker_pending or lane.paused != before[lane.subscriber.id]:
                continue  # its marker is being written, or it changed meanwhile
            if self._lanes.get(lane.subscriber.id) is not lane:
                continue  # removed meanwhile
            has_marker = lane.subscriber.id in marked
            if has_marker != lane.paused:
                reason = "pause marker present" if has_marker else "pause marker removed"
                lane.set_paused(has_marker, reason)
                await self.sync(lane)

    async def _pause_for_gone(self, lane: Lane, event_id: str | None) -> None:
        """The receiver answered 410 Gone: stop until an operator resumes (on every replica)."""
        if lane.paused:
            return
        lane.set_paused(True, "receiver answered 410 Gone")
        note_paused(lane.subscriber, event_id)
        lane.marker_pending = True
        await self.sync(lane)
        try:
            await asyncio.to_thread(
                mark_paused,
                self._broker,
                lane.subscriber.id,
                reason="410 Gone",
                event_id=event_id or "",
            )
        except BrokerError as exc:
            # Without a marker the next poll resumes the subscriber, and the next
            # 410 pauses it again: one more dead letter, nothing worse.
            log.error("pause_marker_failed", subscriber=lane.subscriber.id, error=str(exc))
        finally:
            lane.marker_pending = False
