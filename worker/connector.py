"""Reaching the broker: declare the topology, read the pause markers and the
registry, open the channels; retried with backoff until the worker stops."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from broker.async_channel import AmqpChannel
from broker.async_connection import AmqpConnection
from broker.declarer import declare_topology
from broker.reconnect_backoff import Backoff, open_until_stopped
from config.errors import BrokerError
from config.settings import Settings
from worker.consumer_channels import ConsumerChannels
from worker.lanes import Lanes
from worker.pause import paused_among
from worker.reconciler import Reconciler
from worker.registry import reconcile_registry

log = structlog.get_logger("worker")

# The connection, its consumer channels and its publisher channel (confirms on).
Opened = tuple[AmqpConnection, ConsumerChannels, AmqpChannel]

_BACKOFF = Backoff(first_seconds=0.2, most_seconds=15, jitter_seconds=0.5)


class Connector:
    """Opens a connection ready to serve, re-declaring what the lanes have now."""

    def __init__(
        self,
        settings: Settings,
        lanes: Lanes,
        reconciler: Reconciler,
        *,
        stop: asyncio.Event,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._lanes = lanes
        self._reconciler = reconciler
        self._stop = stop
        # Sleeps between attempts, cut short when the worker is asked to stop.
        self._sleep = sleep

    async def connect(self) -> Opened | None:
        """Connect, declare the topology and open channels; retry with backoff until stopped."""
        return await open_until_stopped(self._open, _BACKOFF, stop=self._stop, sleep=self._sleep)

    async def _open(self) -> Opened:
        name = f"webhook-worker {socket.gethostname()} pid {os.getpid()}"
        try:
            # The subscribers as the lanes have them now (not as at start-up): what
            # the reconciler applied since is declared again after a reconnect.
            # The topology function is synchronous (shared with the producer);
            # run it in a thread so the event loop keeps serving health checks.
            # The pause markers and the registry are independent of the declaration:
            # the three run side by side, each on a connection of its own.
            ids = self._lanes.subscriber_ids
            _, paused, removed = await _all_or_none(
                asyncio.to_thread(
                    declare_topology,
                    self._settings.broker,
                    self._lanes.subscribers,
                    self._settings.retry,
                ),
                asyncio.to_thread(paused_among, self._settings.broker, ids),
                asyncio.to_thread(reconcile_registry, self._settings.broker, ids),
            )
            connection = await AmqpConnection.open(self._settings.broker, name=name)
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            raise
        self._reconciler.report_removed(removed, known_too=True)
        try:
            consumers = await ConsumerChannels.open(connection, self._lanes.channel_count)
            publisher = await connection.channel()
            await publisher.enable_confirms()
        except BrokerError as exc:
            log.warning("broker_connect_failed", error=str(exc))
            await connection.close()
            raise
        for subscriber_id in paused:
            if subscriber_id in self._lanes:
                self._lanes[subscriber_id].set_paused(True, "pause marker present")
        return connection, consumers, publisher


async def _all_or_none(*steps: Awaitable[Any]) -> list[Any]:
    """Await every step; if one fails, still wait for the others (threads cannot be
    cancelled), then raise the first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
