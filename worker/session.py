"""Serving on one connection: start the consumers, watch the connection, then
drain on a stop or let go when the broker goes away.

In-flight deliveries outlive a lost connection (their acks are skipped and the
broker redelivers); the worker (worker.service) reconnects and serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from broker.async_channel import AmqpChannel, Message
from broker.async_connection import AmqpConnection
from config.errors import BrokerError
from worker.change_notices import ChangeNotice, ChangeNotices
from worker.connector import Opened
from worker.consumer_channels import ConsumerChannels
from worker.lane import Lane
from worker.lanes import Lanes
from worker.processor import MessageProcessor
from worker.reconciler import Reconciler

log = structlog.get_logger("worker")


class Session:
    """Serves each connection the worker opens, one at a time, until it stops or is lost."""

    def __init__(
        self,
        lanes: Lanes,
        reconciler: Reconciler,
        processor: MessageProcessor,
        *,
        stop: asyncio.Event,
        tasks: set[asyncio.Task[None]],
        set_ready: Callable[[bool], None],
        grace_seconds: float,
    ) -> None:
        self._lanes = lanes
        self._reconciler = reconciler
        self._processor = processor
        self._stop = stop
        # The worker's deliveries in flight (it counts them; they outlive a connection).
        self._tasks = tasks
        self._marker_checks: set[asyncio.Task[None]] = set()
        self._set_ready = set_ready
        self._grace_seconds = grace_seconds

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet finished."""
        return len(self._tasks)

    async def serve(self, opened: Opened) -> None:
        """Consume on ``opened`` until stopped (then drain) or until the connection is lost."""
        processor = self._processor
        connection, consumers, publisher = opened

        def handle(lane: Lane, message: Message) -> None:
            ticket = lane.breaker.ticket()
            task = asyncio.create_task(self._handle(lane, processor, message, publisher, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            await self._lanes.start_consuming(consumers, handle)
            # Heard before the first reconciliation below, so that no change made
            # from here on can slip between the two.
            notices = await ChangeNotices.start(connection, self._on_notice)
        except BrokerError as exc:
            log.warning("consume_failed", error=str(exc))
            self._lanes.forget_consumers()
            await connection.close()
            return
        self._set_ready(True)
        log.info(
            "consuming",
            queues=self._lanes.consuming,
            channels=len(consumers),
            paused=sorted(lane.subscriber.id for lane in self._lanes if lane.paused),
        )

        stop_waiter = asyncio.ensure_future(self._stop.wait())
        background = [
            asyncio.ensure_future(self._lanes.supervise()),
            asyncio.ensure_future(self._reconciler.run(connection)),
        ]
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter,
                connection.closed,
                consumers.closed,
                consumers.cancelled_by_broker,
                publisher.closed,
                notices.closed,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._set_ready(False)

        if self._stop.is_set():
            await self._drain(connection, consumers)
            return
        if consumers.cancelled_by_broker.done() and not consumers.closed.done():
            # Reconnecting re-declares the topology (so a deleted work queue comes
            # back, empty) and consumes every queue again.
            log.error(
                "consumer_cancelled_by_broker",
                consumer_tag=consumers.cancelled_by_broker.result(),
                in_flight=self.in_flight,
            )
        else:
            # A consumer channel closed by the broker alone (a refused consume names
            # its queue, an unknown delivery tag...) ends the session too: the clean
            # reconnect re-declares the topology and starts every consumer again,
            # rather than serving on with that channel's lanes silently idle.
            lost = (connection.closed, publisher.closed, notices.closed, consumers.closed)
            reason = next((f.result() for f in lost if f.done()), None)
            channel = consumers.closed_index if not connection.closed.done() else None
            log.warning(
                "broker_connection_lost",
                reason=repr(reason),
                consumer_channel=channel,
                in_flight=self.in_flight,
            )
        self._lanes.forget_consumers()
        # In-flight deliveries finish on their own; their acks are skipped because
        # the channel is gone, and the broker redelivers those messages to us.
        await connection.close()

    def _on_notice(self, notice: ChangeNotice) -> None:
        """A change notice for the reconciler, or a pause marker to follow now."""
        if notice.pause_marker is not None:
            task = asyncio.create_task(self._lanes.check_marker(notice.pause_marker))
            self._marker_checks.add(task)
            task.add_done_callback(self._marker_checks.discard)
        self._reconciler.notice(notice)

    async def _drain(self, connection: AmqpConnection, consumers: ConsumerChannels) -> None:
        """Stop taking messages, let in-flight ones finish within the grace period, close."""
        await self._lanes.stop_consuming(consumers)
        pending = set(self._tasks)
        log.info("draining", in_flight=len(pending))
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._grace_seconds)
            if late:
                # Unfinished deliveries are abandoned unacked: closing the channel
                # returns them to the queue for the next worker.
                log.warning("drain_deadline_passed", abandoned=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5)
        # Acks wait for the end of a loop turn (broker.async_connection batches them); send
        # the last ones now, ahead of the close, or their messages come back.
        consumers.flush_acks()
        await connection.close()

    async def _handle(
        self,
        lane: Lane,
        processor: MessageProcessor,
        message: Message,
        publisher: AmqpChannel,
        ticket: int,
    ) -> None:
        settled = await processor.process(lane.subscriber, message, publisher)
        if settled is None:
            return
        await self._lanes.settle(lane, ticket, settled, message.properties.message_id)
