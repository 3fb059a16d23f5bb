"""The worker daemon: connect, declare, consume, reconnect, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from broker.async_connection import AmqpChannel, AmqpConnection, Message
from broker.declarer import declare_topology
from config.errors import BrokerError
from config.settings import Settings
from config.subscribers import Subscriber
from config.topology import work_queue
from worker import metrics
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.delivery import Deliverer
from worker.health import HealthServer
from worker.pause import mark_paused, paused_among
from worker.processor import MessageProcessor
from worker.registry import reconcile_registry
from worker.retry import GONE

log = structlog.get_logger("worker")

_CIRCUIT_EVENTS = {
    CircuitState.OPEN: "circuit_opened",
    CircuitState.HALF_OPEN: "circuit_half_open",
    CircuitState.CLOSED: "circuit_closed",
}
# How often open circuits are checked for a due probe.
_CIRCUIT_TICK_SECONDS = 0.2


def _ignore(_message: Message) -> None:
    raise RuntimeError("a consumer started before the worker was serving")


@dataclass
class _Lane:
    """One subscriber's consumption: its breaker, its pause, its current consumer."""

    subscriber: Subscriber
    breaker: CircuitBreaker
    paused: bool = False
    marker_pending: bool = False  # 410 seen, marker being written: polls must not unpause
    tag: str | None = None
    prefetch: int = 0

    def wanted_prefetch(self) -> int:
        """0 = do not consume; 1 = probe; else the subscriber's own in-flight budget."""
        if self.paused or self.breaker.state is CircuitState.OPEN:
            return 0
        if self.breaker.state is CircuitState.HALF_OPEN:
            return 1
        return self.subscriber.max_in_flight


class Worker:
    """One worker process. ``run()`` returns after ``request_stop()`` and a graceful drain."""

    def __init__(
        self,
        settings: Settings,
        *,
        requeue_delay_seconds: float = 5.0,
        pause_poll_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self._requeue_delay = requeue_delay_seconds
        self._pause_poll = pause_poll_seconds
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = False
        self._lanes = {
            sub.id: _Lane(sub, CircuitBreaker(settings.breaker_policy(sub)))
            for sub in settings.subscribers
        }
        self._consumer: AmqpChannel | None = None
        self._removed: dict[str, int] = {}
        self._on_message: Callable[[_Lane], Callable[[Message], None]] = lambda _lane: _ignore
        # basic.qos applies to the consumers created after it on the channel, so a
        # qos + consume pair must not interleave with another lane's.
        self._consume_lock = asyncio.Lock()
        for lane in self._lanes.values():
            metrics.set_circuit_state(lane.subscriber.id, lane.breaker.state.label)
            metrics.SUBSCRIBER_PAUSED.labels(lane.subscriber.id).set(0)
        self.health = HealthServer(
            settings.metrics_host, settings.metrics_port, self.is_ready, self.status
        )

    def is_ready(self) -> bool:
        """Connected to the broker and consuming every work queue not paused or open on purpose."""
        return self._ready

    def request_stop(self) -> None:
        """Begin a graceful stop (safe to call from a signal handler, more than once)."""
        if not self._stop.is_set():
            log.info("worker_stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows: per subscriber, circuit state and pause."""
        subscribers = []
        for lane in self._lanes.values():
            breaker = lane.breaker
            probe_in = breaker.seconds_until_probe()
            subscribers.append(
                {
                    "id": lane.subscriber.id,
                    "circuit": breaker.state.label,
                    "paused": lane.paused,
                    "consuming": lane.tag is not None,
                    "prefetch": lane.prefetch,
                    "consecutive_failures": breaker.consecutive_failures,
                    "cooldown_seconds": breaker.cooldown_seconds,
                    "probe_in_seconds": None if probe_in is None else round(probe_in, 3),
                }
            )
        return {
            "ready": self._ready,
            "subscribers": subscribers,
            # Seen at the last connect: no longer configured, events still queued.
            "removed_subscribers_with_queues": [
                {"id": i, "queue": work_queue(i), "messages": n}
                for i, n in sorted(self._removed.items())
            ],
        }

    async def run(self) -> None:
        """Serve until asked to stop; reconnects on its own whenever the broker goes away."""
        await self.health.start()
        log.info(
            "worker_started",
            subscribers=len(self.settings.subscribers),
            broker=self.settings.broker.redacted,
            metrics_port=self.health.port,
        )
        try:
            async with Deliverer(
                allow_private_networks=self.settings.security.allow_private_networks
            ) as deliverer:
                processor = MessageProcessor(
                    deliverer, self.settings.retry, requeue_delay_seconds=self._requeue_delay
                )
                first = True
                while not self._stop.is_set():
                    connection = await self._connect()
                    if connection is None:
                        break
                    if not first:
                        metrics.BROKER_RECONNECTS.inc()
                    first = False
                    await self._serve(connection, processor)
        finally:
            self._set_ready(False)
            await self.health.stop()
            log.info("worker_stopped")

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        metrics.READY.set(1 if ready else 0)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _connect(self) -> tuple[AmqpConnection, AmqpChannel, AmqpChannel] | None:
        """Connect, declare the topology and open channels; retry with backoff until stopped."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BrokerError),
            wait=wait_exponential_jitter(multiplier=0.2, max=15, jitter=0.5),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep_unless_stopped,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if self._stop.is_set():
                        return None
                    return await self._open()
        except BrokerError:
            return None  # only reached when stopping mid-retry
        return None

    async def _open(self) -> tuple[AmqpConnection, AmqpChannel, AmqpChannel]:
        name = f"webhook-worker {socket.gethostname()} pid {os.getpid()}"
        try:
            # The topology function is synchronous (shared with the producer);
            # run it in a thread so the event loop keeps serving health checks.
            await asyncio.to_thread(
                declare_topology,
                self.settings.broker,
                self.settings.subscribers,
                self.settings.retry,
            )
            paused = await asyncio.to_thread(paused_among, self.settings.broker, list(self._lanes))
            removed = await asyncio.to_thread(
                reconcile_registry, self.settings.broker, list(self._lanes)
            )
            connection = await AmqpConnection.open(self.settings.broker, name=name)
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            raise
        self._removed = removed
        for subscriber_id, messages in sorted(removed.items()):
            log.warning(
                "removed_subscriber_has_queue",
                subscriber=subscriber_id,
                queue=work_queue(subscriber_id),
                messages=messages,
                hint="no worker consumes it and its bindings still route new events to it; "
                "move or replay what is left, then delete the queue",
            )
        try:
            consumer = await connection.channel()
            publisher = await connection.channel()
            await publisher.enable_confirms()
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            await connection.close()
            raise
        for subscriber_id in paused:
            self._set_paused(self._lanes[subscriber_id], True, "pause marker present")
        return connection, consumer, publisher

    async def _serve(
        self, opened: tuple[AmqpConnection, AmqpChannel, AmqpChannel], processor: MessageProcessor
    ) -> None:
        connection, consumer, publisher = opened

        def on_message(lane: _Lane) -> Any:
            def handle(message: Message) -> None:
                ticket = lane.breaker.ticket()
                task = asyncio.create_task(
                    self._handle(lane, processor, message, publisher, ticket)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            return handle

        self._consumer = consumer
        self._on_message = on_message
        try:
            for lane in self._lanes.values():
                await self._sync(lane, strict=True)
        except BrokerError as exc:
            log.warning("consume_failed", error=str(exc))
            self._forget_consumers()
            await connection.close()
            return
        self._set_ready(True)
        log.info(
            "consuming",
            queues=sum(1 for lane in self._lanes.values() if lane.tag is not None),
            paused=sorted(i for i, lane in self._lanes.items() if lane.paused),
        )

        stop_waiter = asyncio.ensure_future(self._stop.wait())
        supervisor = asyncio.ensure_future(self._supervise())
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter,
                connection.closed,
                consumer.closed,
                consumer.cancelled_by_broker,
                publisher.closed,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self._set_ready(False)

        if self._stop.is_set():
            await self._drain(connection, consumer)
            return
        if consumer.cancelled_by_broker.done() and not consumer.closed.done():
            # Reconnecting re-declares the topology (so a deleted work queue comes
            # back, empty) and consumes every queue again.
            log.error(
                "consumer_cancelled_by_broker",
                consumer_tag=consumer.cancelled_by_broker.result(),
                in_flight=self.in_flight,
            )
        else:
            reason = next(
                (
                    f.result()
                    for f in (connection.closed, consumer.closed, publisher.closed)
                    if f.done()
                ),
                None,
            )
            log.warning("broker_connection_lost", reason=repr(reason), in_flight=self.in_flight)
        self._forget_consumers()
        # In-flight deliveries finish on their own; their acks are skipped because
        # the channel is gone, and the broker redelivers those messages to us.
        await connection.close()

    def _forget_consumers(self) -> None:
        """The channel is gone, and its consumer tags with it."""
        self._consumer = None
        for lane in self._lanes.values():
            lane.tag, lane.prefetch = None, 0
        metrics.CONSUMERS.set(0)

    async def _drain(self, connection: AmqpConnection, consumer: AmqpChannel) -> None:
        """Stop taking messages, let in-flight ones finish within the grace period, close."""
        self._consumer = None  # no circuit change may start a consumer now
        async with self._consume_lock:
            for lane in self._lanes.values():
                if lane.tag is not None:
                    with contextlib.suppress(BrokerError):
                        await consumer.cancel(lane.tag)
                lane.tag, lane.prefetch = None, 0
        metrics.CONSUMERS.set(0)
        pending = set(self._tasks)
        log.info("draining", in_flight=len(pending))
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
            if late:
                # Unfinished deliveries are abandoned unacked: closing the channel
                # returns them to the queue for the next worker.
                log.warning("drain_deadline_passed", abandoned=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5)
        # Acks wait for the end of a loop turn (broker.async_connection batches them); send
        # the last ones now, ahead of the close, or their messages come back.
        consumer.flush_acks()
        await connection.close()

    # --- circuit breaker and pauses -------------------------------------------

    async def _handle(
        self,
        lane: _Lane,
        processor: MessageProcessor,
        message: Message,
        publisher: AmqpChannel,
        ticket: int,
    ) -> None:
        result = await processor.process(lane.subscriber, message, publisher)
        if result is None:
            return
        if result.status == GONE:
            await self._pause_for_gone(lane, getattr(message.properties, "message_id", None))
            return
        state = lane.breaker.record(ticket, result.ok)
        if state is not None:
            self._log_transition(lane, state)
            await self._sync(lane)

    def _log_transition(self, lane: _Lane, state: CircuitState) -> None:
        breaker = lane.breaker
        metrics.set_circuit_state(lane.subscriber.id, state.label)
        metrics.CIRCUIT_TRANSITIONS.labels(lane.subscriber.id, state.label).inc()
        fields: dict[str, Any] = {"subscriber": lane.subscriber.id}
        if state is CircuitState.OPEN:
            fields.update(
                consecutive_failures=breaker.consecutive_failures,
                cooldown_seconds=breaker.cooldown_seconds,
            )
        level = log.warning if state is CircuitState.OPEN else log.info
        level(_CIRCUIT_EVENTS[state], **fields)

    async def _sync(self, lane: _Lane, *, strict: bool = False) -> None:
        """Make ``lane``'s consumer match its state: none, a one-message probe, or full.

        Cancelling leaves the subscriber's events in its queue: no attempt is
        spent while the circuit is open. Messages already received are settled
        as usual. Errors are left to the connection watcher unless ``strict``.
        """
        async with self._consume_lock:
            consumer = self._consumer
            if consumer is None:
                return
            wanted = lane.wanted_prefetch()
            try:
                if lane.tag is not None and lane.prefetch != wanted:
                    tag, lane.tag, lane.prefetch = lane.tag, None, 0
                    await consumer.cancel(tag)
                if wanted and lane.tag is None:
                    lane.tag = await consumer.consume(
                        work_queue(lane.subscriber.id),
                        self._on_message(lane),
                        prefetch=wanted,
                    )
                    lane.prefetch = wanted
            except BrokerError as exc:
                if strict:
                    raise
                log.warning("consumer_change_failed", subscriber=lane.subscriber.id, error=str(exc))
            metrics.CONSUMERS.set(sum(1 for each in self._lanes.values() if each.tag is not None))

    async def _supervise(self) -> None:
        """Start due probes; resume subscribers whose pause an operator lifted."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self._pause_poll
        while True:
            await asyncio.sleep(_CIRCUIT_TICK_SECONDS)
            for lane in self._lanes.values():
                if lane.breaker.start_probe() is not None:
                    self._log_transition(lane, CircuitState.HALF_OPEN)
                    await self._sync(lane)
            if loop.time() >= next_poll:
                next_poll = loop.time() + self._pause_poll
                await self._poll_pauses()

    async def _poll_pauses(self) -> None:
        """Resume the paused subscribers whose marker an operator removed.

        Only paused ones are checked: a missing marker costs the broker a channel
        error, which must stay rare. Other replicas learn of a pause from their own
        410, or from the marker when they (re)connect.
        """
        paused_lanes = [lane for lane in self._lanes.values() if lane.paused]
        if not paused_lanes:
            return
        try:
            still = await asyncio.to_thread(
                paused_among, self.settings.broker, [lane.subscriber.id for lane in paused_lanes]
            )
        except BrokerError as exc:
            log.warning("pause_check_failed", error=str(exc))
            return
        for lane in paused_lanes:
            if lane.subscriber.id not in still and not lane.marker_pending:
                self._set_paused(lane, False, "pause marker removed")
                await self._sync(lane)

    def _set_paused(self, lane: _Lane, paused: bool, reason: str) -> None:
        if lane.paused == paused:
            return
        lane.paused = paused
        metrics.SUBSCRIBER_PAUSED.labels(lane.subscriber.id).set(1 if paused else 0)
        if paused:
            log.warning(
                "subscriber_paused",
                subscriber=lane.subscriber.id,
                reason=reason,
                resume_with=f"webhook-worker resume {lane.subscriber.id}",
            )
            return
        log.info("subscriber_resumed", subscriber=lane.subscriber.id, reason=reason)
        state = lane.breaker.reset()
        if state is not None:
            self._log_transition(lane, state)

    async def _pause_for_gone(self, lane: _Lane, event_id: str | None) -> None:
        """The receiver answered 410 Gone: stop until an operator resumes (on every replica)."""
        if lane.paused:
            return
        self._set_paused(lane, True, "receiver answered 410 Gone")
        lane.marker_pending = True
        await self._sync(lane)
        try:
            await asyncio.to_thread(
                mark_paused,
                self.settings.broker,
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
