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
import time
from collections.abc import Callable

import structlog

from broker.consumers import Message
from broker.queue_consumer import Connect, QueueConsumer, Settlement, open_connection
from broker.reconnect_backoff import Backoff
from broker.url import BrokerUrl
from config.errors import StoreError
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
# Notices still being sent when the drain is over: how long they get to unwind.
_CANCEL_SECONDS = 5.0

# What a fact's handler waits for: resolved once the notice covering it was sent.
Token = asyncio.Future[Settlement]


class Notifier:
    """One notifier process; ``run()`` returns after ``request_stop()``."""

    def __init__(
        self,
        broker: BrokerUrl,
        destinations: Destinations,
        sender: NoticeSender,
        aggregator: Aggregator[Token],
        *,
        clock: Callable[[], float] = time.monotonic,
        prefetch: int = PREFETCH,
        grace_seconds: float = 30.0,
        connect: Connect = open_connection,
    ) -> None:
        self._destinations = destinations
        self._sender = sender
        self._aggregator = aggregator
        self._clock = clock
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_NOTICES)
        # Notices already under way get ``grace_seconds`` to finish (and ack their
        # facts); open windows go back to the queue for the next consumer.
        self._consumer = QueueConsumer(
            broker,
            process="webhook-notifier",
            topology=operational_facts_topology(),
            queue=OPERATIONAL_FACTS_QUEUE,
            prefetch=prefetch,
            handle=self._handle,
            on_ready=self._on_ready,
            drain_seconds=grace_seconds,
            backoff=Backoff(_RECONNECT_FIRST_SECONDS, _RECONNECT_MAX_SECONDS),
            connect=connect,
        )

    def is_ready(self) -> bool:
        """Connected and consuming the facts queue."""
        return self._consumer.ready

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self._consumer.request_stop()

    async def run(self) -> None:
        """Serve until stopped, reconnecting whenever the broker goes away."""
        flusher = asyncio.ensure_future(self._flush_loop())
        try:
            await self._consumer.run()
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._cancel_sending()
            self._destinations.close()
            await self._sender.close()
            log.info("notifier_stopped")

    def _on_ready(self, ready: bool) -> None:
        metrics.READY.set(1 if ready else 0)
        if ready:
            log.info("notifier_consuming", queue=OPERATIONAL_FACTS_QUEUE)
            return
        # Stopping or disconnected: open windows are not sent; their facts stay
        # unacked and go back to the queue, to be counted by the next consumer.
        dropped = self._aggregator.drop_open()
        for window in dropped:
            for token in window.tokens:
                token.cancel()
        metrics.WINDOWS_OPEN.set(0)
        if dropped:
            log.info("notice_windows_requeued", windows=len(dropped))

    async def _handle(self, message: Message) -> Settlement:
        """Settled once the notice counting this fact was sent or given up."""
        fact = decode_fact(message.body)
        if fact is None:
            metrics.FACTS.labels("unreadable").inc()
            log.error(
                "operational_fact_unreadable",
                body_bytes=len(message.body),
                message_type=message.properties.type,
            )
            return Settlement.ACK  # told once, here: it would be unreadable on every redelivery
        metrics.FACTS.labels(fact.kind).inc()
        token: Token = asyncio.get_running_loop().create_future()
        self._aggregator.add(fact, token, self._clock())
        metrics.WINDOWS_OPEN.set(len(self._aggregator))
        self._wake.set()
        return await token

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

    async def _send(self, window: Window[Token]) -> None:
        """Send the window's notice everywhere it goes, then settle its facts (ack)."""
        try:
            await self._send_everywhere(window)
        except Exception:
            # A bug met something unforeseen: told once here, and the facts are
            # acked, rather than coming back to crash every notifier in turn.
            metrics.NOTICES_GIVEN_UP.labels("operator").inc()
            log.exception("notice_send_crashed", account=window.account, endpoint=window.endpoint)
        for token in window.tokens:
            if not token.done():  # cancelled when the channel went away meanwhile
                token.set_result(Settlement.ACK)

    async def _send_everywhere(self, window: Window[Token]) -> None:
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

    async def _cancel_sending(self) -> None:
        """Notices still under way after the drain: their facts went back to the queue."""
        late = set(self._sending)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=_CANCEL_SECONDS)
