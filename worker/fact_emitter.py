"""Publishes the worker's operational facts to the broker, off the delivery path.

Its own connection and channel, so neither a slow facts queue nor its
reconnects touch the channel that carries retries and dead letters.  Each round
takes up to ``BATCH`` facts from the outbox (worker.fact_outbox), publishes
them all at once (mandatory, confirmed) and forgets those the broker
confirmed.  A refused fact (the bounded queue is full: no notifier consumes)
is counted as dropped; any other broker trouble puts the round back in front of
the outbox, and the emitter reconnects with backoff, declaring the facts
topology again (topology is data, declared after every connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pika
import structlog

from broker.async_channel import AmqpChannel
from broker.async_connection import AmqpConnection
from broker.url import BrokerUrl
from config.errors import BrokerError, NackedError
from config.topology import OPERATIONAL_FACTS_EXCHANGE, operational_facts_topology
from wire import contract
from wire.operational_fact import encode_fact
from worker import metrics
from worker.fact_outbox import OUTBOX, FactOutbox

log = structlog.get_logger("worker")

BATCH = 500
_BACKOFF_FIRST_SECONDS = 0.5
_BACKOFF_MAX_SECONDS = 15.0
# How long a stopping worker tries to publish the facts still buffered.
STOP_FLUSH_SECONDS = 3.0
_PROPERTIES = pika.BasicProperties(
    content_type="application/json", delivery_mode=contract.PERSISTENT, type="operational_fact"
)


class FactEmitter:
    """The task that empties ``outbox`` into the operational-facts queue."""

    def __init__(self, broker: BrokerUrl, outbox: FactOutbox = OUTBOX) -> None:
        self._broker = broker
        self._outbox = outbox
        self._wake = asyncio.Event()
        self._stopping = False
        self._connection: AmqpConnection | None = None
        self._channel: AmqpChannel | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, broker: BrokerUrl, outbox: FactOutbox = OUTBOX) -> FactEmitter:
        """Attach to ``outbox`` and start publishing in the background."""
        emitter = cls(broker, outbox)
        outbox.attach(emitter._wake.set)
        emitter._task = asyncio.create_task(emitter._run())
        return emitter

    async def stop(self, flush_seconds: float = STOP_FLUSH_SECONDS) -> None:
        """Publish what is buffered for up to ``flush_seconds``, then close."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=flush_seconds)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = len(self._outbox)
        if left:
            log.warning("operational_facts_unpublished_at_stop", facts=left)
        self._outbox.detach()
        await self._disconnect()

    async def _run(self) -> None:
        backoff = _BACKOFF_FIRST_SECONDS
        while True:
            if not len(self._outbox):
                if self._stopping:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            try:
                await self._publish_round()
                backoff = _BACKOFF_FIRST_SECONDS
            except BrokerError as exc:
                log.warning("operational_facts_publish_failed", error=str(exc))
                await self._disconnect()
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)

    async def _publish_round(self) -> None:
        channel = await self._ready_channel()
        batch = self._outbox.peek(BATCH)
        results = await asyncio.gather(
            *(
                channel.publish(OPERATIONAL_FACTS_EXCHANGE, "", encode_fact(f), _PROPERTIES)
                for f in batch
            ),
            return_exceptions=True,
        )
        again = [f for f, r in zip(batch, results, strict=True) if _retryable(r)]
        refused = sum(1 for r in results if isinstance(r, NackedError))
        broken = [r for r in results if isinstance(r, Exception) and not isinstance(r, BrokerError)]
        published = len(batch) - len(again) - refused - len(broken)
        self._outbox.settle(len(batch), again)
        if published:
            metrics.OPERATIONAL_FACTS_PUBLISHED.inc(published)
        if refused:
            self._outbox.count_dropped("queue_full", refused)
        if broken:
            # A bug, not the broker: told once per round, and those facts are
            # not tried again (they would fail the same way forever).
            self._outbox.count_dropped("error", len(broken))
            log.error("operational_facts_publish_crashed", facts=len(broken), error=repr(broken[0]))
        failures = [r for r in results if isinstance(r, BrokerError) and _retryable(r)]
        if failures:
            raise failures[0]

    async def _ready_channel(self) -> AmqpChannel:
        channel = self._channel
        if channel is not None and channel.is_open:
            return channel
        await self._disconnect()
        name = f"webhook-worker facts {socket.gethostname()} pid {os.getpid()}"
        connection = await AmqpConnection.open(self._broker, name=name)
        self._connection = connection
        channel = await connection.channel()
        await channel.declare(operational_facts_topology())
        await channel.enable_confirms()
        self._channel = channel
        return channel

    async def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(BrokerError):
                await connection.close()


def _retryable(result: object) -> bool:
    """A publish the broker failed for a reason other than the queue refusing it."""
    return isinstance(result, BrokerError) and not isinstance(result, NackedError)
