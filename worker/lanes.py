"""Every subscriber's lane and the consumer channels they share while connected.

Lanes come and go as the configuration changes (worker.reconciler); a message
already received keeps its lane.  Each lane consumes on the channel its id picks
(worker.consumer_channels); what happens to one lane's consumer is serialised by
that channel's lock, so the channels start, change and cancel side by side.
Following the pause markers is worker.pause_follower's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from functools import partial

import structlog

from broker.async_channel import AmqpChannel, Message
from broker.url import BrokerUrl
from config.errors import BrokerError
from config.subscriber_record import AnySubscriber
from config.subscribers import CircuitBreakerPolicy
from config.topology import work_queue
from worker import metrics
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.consumer_channels import CONSUMER_CHANNELS, ConsumerChannels, channel_index
from worker.lane import Lane
from worker.pause_follower import PauseFollower
from worker.processor import Settlement
from worker.retry import DeadLetter

log = structlog.get_logger("worker")

# How often open circuits are checked for a due probe.
_CIRCUIT_TICK_SECONDS = 0.2
# Consumers started per round trip at start-up (see Lanes.start_consuming): big
# enough that 10,000 lanes take a few dozen round trips, small enough that one
# window's frames (~100 bytes each) and the broker's work on them stay short.
_CONSUME_WINDOW = 500

MessageHandler = Callable[["Lane", Message], None]


def _refuse(_lane: Lane, _message: Message) -> None:
    raise RuntimeError("a consumer started before the worker was serving")


class Lanes:
    """Every subscriber's lane, and the consumer channels they share while connected."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        pause_poll_seconds: float,
        full_pause_check_every: int = 6,
        consumer_channels: int = CONSUMER_CHANNELS,
    ) -> None:
        self._pause_poll = pause_poll_seconds
        # Every marker is checked at every n-th poll (announcements cover the rest:
        # worker.pause); paused subscribers' markers at every poll.
        self._full_check_every = max(1, full_pause_check_every)
        self._polls = 0
        self._lanes: dict[str, Lane] = {}
        self.channel_count = max(1, consumer_channels)
        self._channels: ConsumerChannels | None = None
        self._handler: MessageHandler = _refuse
        # One per channel, kept across connections: basic.qos applies to the consumers
        # made after it on its channel, so a qos + consume pair must not interleave
        # with another lane's there; a lane's tag changes only under this lock.
        self._locks = [asyncio.Lock() for _ in range(self.channel_count)]
        self._pauses = PauseFollower(broker, is_current=self._is_current, sync=self.sync)

    def add(
        self, subscriber: AnySubscriber, policy: CircuitBreakerPolicy, config_state: str
    ) -> Lane:
        """A new lane (not consuming yet: :meth:`sync` starts it when connected)."""
        lane = Lane(subscriber, CircuitBreaker(policy), config_state=config_state)
        self._lanes[subscriber.id] = lane
        lane.export_state()
        return lane

    def update(
        self, subscriber: AnySubscriber, policy: CircuitBreakerPolicy, config_state: str
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
        async with self._lock_of(lane):
            tag, lane.tag, lane.prefetch = lane.tag, None, 0
            channels = self._channels
            if tag is not None and channels is not None:
                try:
                    await channels.of(subscriber_id).cancel(tag)
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
    def subscribers(self) -> list[AnySubscriber]:
        """The configured subscribers, as the lanes have them now."""
        return [lane.subscriber for lane in self._lanes.values()]

    @property
    def consuming(self) -> int:
        """How many lanes have a consumer right now."""
        return sum(1 for lane in self._lanes.values() if lane.tag is not None)

    async def start_consuming(self, channels: ConsumerChannels, handler: MessageHandler) -> None:
        """Give every lane the consumer its state asks for on its channel; raises BrokerError
        (the first refusal; the other channels then stop after their current window).

        The channels side by side, each a window of lanes at a time, pipelined (one
        round trip per window and prefetch); between windows the channel's lock is
        let go, so breaker changes and the reconciler's steps are not held up.
        """
        if len(channels) != self.channel_count:
            raise ValueError(f"{len(channels)} channels for {self.channel_count}")
        self._channels = channels
        self._handler = handler
        # The groups are copies: the reconciler may add or remove lanes meanwhile.
        failures: list[BrokerError] = []
        await asyncio.gather(
            *(
                self._start_channel(index, lanes, failures)
                for index, lanes in enumerate(self._by_channel())
                if lanes
            )
        )
        if failures:
            raise failures[0]

    async def _start_channel(
        self, index: int, lanes: list[Lane], failures: list[BrokerError]
    ) -> None:
        for start in range(0, len(lanes), _CONSUME_WINDOW):
            if failures:
                return  # the start has failed on another channel: reconnecting anyway
            try:
                await self._start_window(index, lanes[start : start + _CONSUME_WINDOW])
            except BrokerError as exc:
                failures.append(exc)
                return

    async def _start_window(self, index: int, window: list[Lane]) -> None:
        async with self._locks[index]:
            if self._channels is None:
                return
            consumer = self._channels[index]
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
        """The channels are gone, and their consumer tags with them."""
        self._channels = None
        for lane in self._lanes.values():
            lane.tag, lane.prefetch = None, 0
        metrics.CONSUMERS.set(0)

    async def stop_consuming(self, channels: ConsumerChannels) -> None:
        """Cancel every consumer for good, the channels side by side; messages already
        received are still settled (on their channels, left open for that)."""
        self._channels = None  # no circuit change may start a consumer now
        await asyncio.gather(
            *(
                self._cancel_all(index, channels[index], lanes)
                for index, lanes in enumerate(self._by_channel())
            )
        )
        metrics.CONSUMERS.set(0)

    async def _cancel_all(self, index: int, consumer: AmqpChannel, lanes: list[Lane]) -> None:
        async with self._locks[index]:
            for lane in lanes:
                if lane.tag is not None:
                    with contextlib.suppress(BrokerError):
                        await consumer.cancel(lane.tag)
                lane.tag, lane.prefetch = None, 0

    def _by_channel(self) -> list[list[Lane]]:
        """The lanes, grouped by the channel each consumes on."""
        groups: list[list[Lane]] = [[] for _ in range(self.channel_count)]
        for lane in self._lanes.values():
            groups[channel_index(lane.subscriber.id, self.channel_count)].append(lane)
        return groups

    def _lock_of(self, lane: Lane) -> asyncio.Lock:
        return self._locks[channel_index(lane.subscriber.id, self.channel_count)]

    async def sync(self, lane: Lane) -> None:
        """Make ``lane``'s consumer match its state: none, a one-message probe, or full.

        Cancelling leaves the subscriber's events in its queue: no attempt is
        spent while the circuit is open. Messages already received are settled
        as usual. Errors are logged and left to the connection watcher.
        """
        async with self._lock_of(lane):
            channels = self._channels
            if channels is None or self._lanes.get(lane.subscriber.id) is not lane:
                return  # not connected, or the lane was removed meanwhile
            consumer = channels.of(lane.subscriber.id)
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
            await self._pauses.pause_for_gone(lane, event_id)
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
            await self._pauses.follow([lane])

    async def _poll_pauses(self, *, full: bool = True) -> None:
        """Resume paused subscribers whose marker is gone; when ``full``, also pause those
        that have one (a 410 on another replica, the API) whose announcement was lost."""
        await self._pauses.follow([lane for lane in self._lanes.values() if full or lane.paused])

    def _is_current(self, lane: Lane) -> bool:
        return self._lanes.get(lane.subscriber.id) is lane
