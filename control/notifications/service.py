"""The notifier process: consume facts, send one notice per endpoint per window, then ack.

A fact is acked only once the notice covering it was sent to every
destination or given up there (logged and counted): a notifier killed with
windows open loses nothing, the broker hands those facts to the next consumer
(the queue has a single active consumer, so replicas stand by rather than
double-send).  After such a restart an endpoint may be told again sooner than
a window after its last notice; never is a fact left untold.

Nothing here touches deliveries: the workers only publish facts (their
outbox drops, never waits), so a slow or failing notification URL holds up
nothing but notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from broker.async_channel import Message
from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, StoreError
from config.topology import OPERATIONAL_FACTS_QUEUE, operational_facts_topology
from control.notifications import metrics
from control.notifications.aggregator import Aggregator, Window
from control.notifications.destinations import Destination, Destinations
from control.notifications.notice import notice_body, notice_event, notice_id
from control.notifications.sender import NoticeSender
from wire.operational_fact import decode_fact

log = structlog.get_logger("notifier")

# Facts held unacked while their window waits: a storm beyond this waits in
# the queue and is counted in a later notice.
PREFETCH = 5_000
# Notices being sent at once (each to one or two destinations).
CONCURRENT_NOTICES = 32
_RECONNECT_FIRST_SECONDS = 0.5
_RECONNECT_MAX_SECONDS = 15.0


class Notifier:
    """One notifier process; ``run()`` returns after ``request_stop()``."""

    def __init__(
        self,
        broker: BrokerUrl,
        destinations: Destinations,
        sender: NoticeSender,
        aggregator: Aggregator[Message],
        *,
        clock: Callable[[], float] = time.monotonic,
        prefetch: int = PREFETCH,
        grace_seconds: float = 30.0,
    ) -> None:
        self._broker = broker
        self._destinations = destinations
        self._sender = sender
        self._aggregator = aggregator
        self._clock = clock
        self._prefetch = prefetch
        self._grace = grace_seconds
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_NOTICES)
        self._ready = False

    def is_ready(self) -> bool:
        """Connected and consuming the facts queue."""
        return self._ready

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Serve until stopped, reconnecting whenever the broker goes away."""
        backoff = _RECONNECT_FIRST_SECONDS
        while not self._stop.is_set():
            try:
                connection = await AmqpConnection.open(
                    self._broker, name=f"webhook-notifier {socket.gethostname()} pid {os.getpid()}"
                )
            except BrokerError as exc:
                log.warning("broker_connect_failed", error=str(exc))
                consumed = False
            else:
                consumed = await self._serve(connection)
            if consumed:
                backoff = _RECONNECT_FIRST_SECONDS
            elif not self._stop.is_set():
                # Refused or unreachable: wait, so a broker that keeps refusing
                # (a queue declared with other arguments) is not asked in a loop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX_SECONDS)
        await self._finish_sending()
        self._destinations.close()
        await self._sender.close()
        log.info("notifier_stopped")

    async def _serve(self, connection: AmqpConnection) -> bool:
        """Consume until stopped or disconnected; False if consuming never started."""
        try:
            channel = await connection.channel()
            await channel.declare(operational_facts_topology())
            tag = await channel.consume(
                OPERATIONAL_FACTS_QUEUE, self._on_fact, prefetch=self._prefetch
            )
        except BrokerError as exc:
            log.warning("consume_failed", error=str(exc))
            await connection.close()
            return False
        self._set_ready(True)
        log.info("notifier_consuming", queue=OPERATIONAL_FACTS_QUEUE)
        flusher = asyncio.ensure_future(self._flush_loop())
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            watched: set[asyncio.Future[Any]] = {
                stop_waiter,
                connection.closed,
                channel.closed,
                channel.cancelled_by_broker,
            }
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            self._set_ready(False)
        if self._stop.is_set():
            with contextlib.suppress(BrokerError):
                await channel.cancel(tag)
            # Notices already under way are finished and acked; open windows are
            # left unacked and go back to the queue for the next consumer.
            await self._finish_sending()
            channel.flush_acks()
        else:
            log.warning("broker_connection_lost")
        dropped = self._aggregator.drop_open()
        metrics.WINDOWS_OPEN.set(0)
        if dropped and not self._stop.is_set():
            log.info("notice_windows_requeued", windows=len(dropped))
        await connection.close()
        return True

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        metrics.READY.set(1 if ready else 0)

    def _on_fact(self, message: Message) -> None:
        fact = decode_fact(message.body)
        if fact is None:
            metrics.FACTS.labels("unreadable").inc()
            log.error(
                "operational_fact_unreadable",
                body_bytes=len(message.body),
                message_type=message.properties.type,
            )
            message.ack()  # told once, here: it would be unreadable on every redelivery
            return
        metrics.FACTS.labels(fact.kind).inc()
        self._aggregator.add(fact, message, self._clock())
        metrics.WINDOWS_OPEN.set(len(self._aggregator))
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            due_at = self._aggregator.next_send_at()
            timeout = None if due_at is None else max(0.0, due_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            for window in self._aggregator.take_due(self._clock()):
                task = asyncio.create_task(self._send(window))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            metrics.WINDOWS_OPEN.set(len(self._aggregator))

    async def _send(self, window: Window[Message]) -> None:
        """Send the window's notice everywhere it goes, then ack its facts."""
        try:
            await self._send_everywhere(window)
        except Exception:
            # A bug met something unforeseen: told once here, and the facts are
            # acked, rather than coming back to crash every notifier in turn.
            metrics.NOTICES_GIVEN_UP.labels("operator").inc()
            log.exception("notice_send_crashed", account=window.account, endpoint=window.endpoint)
        for message in window.tokens:
            message.ack()

    async def _send_everywhere(self, window: Window[Message]) -> None:
        async with self._slots:
            event = notice_event(window)
            body = notice_body(window, self._aggregator.window_seconds)
            notice = notice_id()
            about = {"account": window.account, "endpoint": window.endpoint}
            sends = []
            if self._destinations.operator is not None:
                sends.append(
                    self._sender.send(self._destinations.operator, body, event, notice, **about)
                )
            account = await self._account_destination(window.account)
            if account is not None:
                sends.append(self._sender.send(account, body, event, notice, **about))
            await asyncio.gather(*sends)

    async def _account_destination(self, account: str | None) -> Destination | None:
        """The account's destination; a store outage is retried like a failing URL."""
        if account is None:
            return None
        plan = self._sender.plan
        backoff = plan.first_backoff_seconds
        for attempt in range(1, plan.attempts + 1):
            try:
                return await self._destinations.account(account)
            except StoreError as exc:
                if attempt == plan.attempts:
                    metrics.NOTICES_GIVEN_UP.labels("account").inc()
                    log.error(
                        "notice_given_up",
                        destination="account",
                        account=account,
                        error=f"cannot read the account's notification URL: {exc}",
                    )
                    return None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, plan.max_backoff_seconds)
        return None

    async def _finish_sending(self) -> None:
        pending = set(self._sending)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
