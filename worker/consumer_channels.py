"""The consumer channels of one connection, and which one each subscriber consumes on.

The broker handles one channel's methods one after another, and a consumer on a
quorum queue is a Raft command: 10,000 consumers took 5.7-7.3 s to start on one
channel, 2.3-3.2 s spread over 4-8 (docs/scaling.md).  So the lanes consume on a
few channels, each subscriber on the one a stable hash of its id picks: the same
on every connection and in every process, so a lane's consumer is always
cancelled, changed and settled where it was made.

Each channel has its own ``basic.qos`` (per consumer, not global: every lane keeps
its own in-flight budget) and its own delivery tags (a message is settled on the
channel that delivered it: :class:`broker.async_channel.Message` carries it).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator, Sequence
from functools import partial

from broker.async_channel import AmqpChannel
from broker.async_connection import AmqpConnection

# Measured at 10,000 endpoints: 4 channels 3.2 s, 8 channels 2.3 s to start every
# consumer (one channel: 5.7-7.3 s); each one costs a few KB here and one channel
# process on the broker.  A module constant, not a setting: nothing an operator
# knows better than this measurement.
CONSUMER_CHANNELS = 8


def channel_index(subscriber_id: str, count: int) -> int:
    """The channel (0..count-1) that ``subscriber_id`` consumes on; stable across processes
    (unlike ``hash()``, which Python salts per process)."""
    return zlib.crc32(subscriber_id.encode()) % count


class ConsumerChannels:
    """A connection's consumer channels; ``closed`` and ``cancelled_by_broker`` resolve
    with the first of theirs that does (any of them closing ends the session)."""

    def __init__(self, channels: Sequence[AmqpChannel]) -> None:
        if not channels:
            raise ValueError("at least one consumer channel")
        self._channels = tuple(channels)
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.cancelled_by_broker: asyncio.Future[str] = loop.create_future()
        # Which channel closed first (for the log), None while every one is open.
        self.closed_index: int | None = None
        for index, channel in enumerate(self._channels):
            channel.closed.add_done_callback(partial(self._on_closed, index))
            channel.cancelled_by_broker.add_done_callback(self._on_cancelled)

    @classmethod
    async def open(cls, connection: AmqpConnection, count: int) -> ConsumerChannels:
        """Open ``count`` channels on ``connection``; raises BrokerError (the caller
        closes the connection, and the channels opened so far with it)."""
        return cls([await connection.channel() for _ in range(count)])

    def _on_closed(self, index: int, done: asyncio.Future[BaseException]) -> None:
        if not self.closed.done() and not done.cancelled():
            self.closed_index = index
            self.closed.set_result(done.result())

    def _on_cancelled(self, done: asyncio.Future[str]) -> None:
        if not self.cancelled_by_broker.done() and not done.cancelled():
            self.cancelled_by_broker.set_result(done.result())

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[AmqpChannel]:
        return iter(self._channels)

    def __getitem__(self, index: int) -> AmqpChannel:
        return self._channels[index]

    def of(self, subscriber_id: str) -> AmqpChannel:
        """The channel ``subscriber_id`` consumes on."""
        return self._channels[channel_index(subscriber_id, len(self._channels))]

    def flush_acks(self) -> None:
        """Send the acks each channel collected during this loop turn."""
        for channel in self._channels:
            channel.flush_acks()
