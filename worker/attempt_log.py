"""The worker's side of the delivery log: attempt records to RabbitMQ, off the delivery path.

``AttemptLog.record`` is all a delivery does: it hands the record to an outbox
(broker.outbox) and returns, never awaits, never raises.  The outbox publishes
batches of records, each one persistent message with publisher confirms, on a
connection of its own: the broker throttling or blocking that connection (a
memory or disk alarm, credit flow, a full log queue) can never hold back the
deliveries' acks and retries on the worker's main connection.

When the broker pushes back (nacks a batch because the log queue is full,
confirms slowly, or is away), unconfirmed batches go back to the front of the
buffer and are sent again later; a batch whose confirm never came may arrive
twice, which the recorder's unique key absorbs.  The buffer is bounded by
records and bytes: past the bound the *oldest* records are dropped and counted
(``webhook_delivery_log_dropped_total{reason="buffer_full"}``).  Dropping, and
not waiting, is deliberate: the log describes deliveries and must never slow or
fail one; and the oldest go first because recent attempts are what operators
ask about.  Records still buffered when the worker stops after its grace are
counted as ``shutdown``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pika

from broker.outbox import (
    Connect,
    DropReason,
    Outbox,
    OutboxLimits,
    OutboxRoute,
    broker_connector,
)
from broker.url import BrokerUrl
from config.topology import DELIVERY_LOG_EXCHANGE, delivery_log_topology
from wire import contract
from wire.attempt_record import WireRecord, encode_wire_batch
from worker import metrics

# A record's size besides its excerpt and body (ids, times, headers, JSON).
_RECORD_OVERHEAD_BYTES = 600


def record_size(record: WireRecord) -> int:
    """Roughly how many bytes ``record`` takes in a batch (its base64 exactly)."""
    body = record["body"]
    return _RECORD_OVERHEAD_BYTES + len(record["response_excerpt"]) + (len(body) if body else 0)


ROUTE: OutboxRoute[WireRecord] = OutboxRoute(
    name="delivery_log",
    exchange=DELIVERY_LOG_EXCHANGE,
    topology=delivery_log_topology(),
    encode=encode_wire_batch,
    properties=pika.BasicProperties(
        content_type="application/json", delivery_mode=contract.PERSISTENT
    ),
    size=record_size,
)


class _Meter:
    """The outbox's figures as the delivery log's metrics."""

    def published(self, items: int) -> None:
        metrics.DELIVERY_LOG_PUBLISHED.inc(items)

    def dropped(self, reason: DropReason, items: int) -> None:
        metrics.DELIVERY_LOG_DROPPED.labels(reason).inc(items)

    def refused(self) -> None:
        metrics.DELIVERY_LOG_REFUSED.inc()

    def buffered(self, items: int) -> None:
        metrics.DELIVERY_LOG_BUFFERED.set(items)


class AttemptLog:
    """Buffers attempt records and publishes them in confirmed batches until closed."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        max_records: int = 50_000,
        max_bytes: int = 64 * 1024 * 1024,
        batch_records: int = 250,
        batch_bytes: int = 1024 * 1024,
        linger_seconds: float = 0.05,
        in_flight_batches: int = 4,
        retry_seconds: float = 1.0,
        connect: Connect | None = None,
    ) -> None:
        name = f"webhook-worker delivery-log {socket.gethostname()} pid {os.getpid()}"
        limits = OutboxLimits(
            max_items=max_records,
            max_bytes=max_bytes,
            batch_items=batch_records,
            batch_bytes=batch_bytes,
            linger_seconds=linger_seconds,
            in_flight=in_flight_batches,
            retry_seconds=retry_seconds,
            shed="oldest",
            refused="retry",
        )
        self._outbox = Outbox(ROUTE, connect or broker_connector(broker, name), _Meter(), limits)
        # Hand one record over: O(1), never blocks, never raises for the broker's
        # sake.  The outbox's own put, with no call in between on the delivery path.
        self.record: Callable[[WireRecord], None] = self._outbox.put

    @property
    def buffered(self) -> int:
        """Records not yet confirmed by the broker (in a batch in flight or waiting)."""
        return self._outbox.buffered

    def start(self) -> None:
        """Start publishing in the background (on the running loop)."""
        self._outbox.start()

    async def close(self, timeout_seconds: float) -> None:
        """Publish what is buffered (within ``timeout_seconds``), then disconnect.

        What is still unconfirmed then is counted as dropped (``shutdown``).
        """
        await self._outbox.close(timeout_seconds)
