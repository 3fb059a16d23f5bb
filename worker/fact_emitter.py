"""Publishes the worker's operational facts to the broker, off the delivery path.

An outbox (broker.outbox) attached to the process's fact sink: its own
connection and channel, so neither a slow facts queue nor its reconnects touch
the channel that carries retries and dead letters.  Each fact is one message
(the notifier reads them one by one), published mandatory and confirmed, many
in flight.  A fact the bounded queue refuses (no notifier consumes) is dropped
and counted (``queue_full``) rather than tried again; any other broker trouble
keeps the facts for after the reconnect, which declares the facts topology
again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import pika

from broker.outbox import Connect, DropReason, Outbox, OutboxLimits, OutboxRoute, broker_connector
from broker.url import BrokerUrl
from config.topology import OPERATIONAL_FACTS_EXCHANGE, operational_facts_topology
from wire import contract
from wire.operational_fact import OperationalFact, encode_fact
from worker import metrics
from worker.fact_outbox import SINK, FactSink

DEFAULT_CAPACITY = 10_000
# How long a stopping worker tries to publish the facts still buffered.
STOP_FLUSH_SECONDS = 3.0
# Facts are rare and small: many single-fact messages awaiting confirms at once.
_IN_FLIGHT = 64


def _encode(facts: Sequence[OperationalFact]) -> bytes:
    [fact] = facts  # one fact per message (batch_items=1)
    return encode_fact(fact)


ROUTE: OutboxRoute[OperationalFact] = OutboxRoute(
    name="operational_facts",
    exchange=OPERATIONAL_FACTS_EXCHANGE,
    topology=operational_facts_topology(),
    encode=_encode,
    properties=pika.BasicProperties(
        content_type="application/json", delivery_mode=contract.PERSISTENT, type="operational_fact"
    ),
)


class _Meter:
    """The outbox's figures as the operational facts' metrics."""

    def published(self, items: int) -> None:
        metrics.OPERATIONAL_FACTS_PUBLISHED.inc(items)

    def dropped(self, reason: DropReason, items: int) -> None:
        metrics.OPERATIONAL_FACTS_DROPPED.labels(reason).inc(items)

    def refused(self) -> None:
        pass  # counted as dropped (queue_full): a refused fact is not sent again

    def buffered(self, items: int) -> None:
        pass  # no gauge: facts are few, the dropped counter tells what matters


class FactEmitter:
    """The outbox that empties the process's fact sink into the operational-facts queue."""

    def __init__(self, outbox: Outbox[OperationalFact], sink: FactSink) -> None:
        self.outbox = outbox
        self._sink = sink

    @classmethod
    def start(
        cls,
        broker: BrokerUrl,
        sink: FactSink = SINK,
        *,
        capacity: int = DEFAULT_CAPACITY,
        connect: Connect | None = None,
    ) -> FactEmitter:
        """Attach an outbox of ``capacity`` facts to ``sink`` and start publishing."""
        name = f"webhook-worker facts {socket.gethostname()} pid {os.getpid()}"
        limits = OutboxLimits(
            max_items=capacity,
            batch_items=1,
            linger_seconds=0.0,
            in_flight=_IN_FLIGHT,
            retry_seconds=0.5,
            shed="newest",
            refused="drop",
        )
        outbox = Outbox(ROUTE, connect or broker_connector(broker, name), _Meter(), limits)
        sink.attach(outbox)
        outbox.start()
        return cls(outbox, sink)

    async def stop(self, flush_seconds: float = STOP_FLUSH_SECONDS) -> None:
        """Publish what is buffered for up to ``flush_seconds``, then close.

        Facts still unpublished then are counted as dropped (``shutdown``).
        """
        await self.outbox.close(flush_seconds)
        self._sink.detach()
