"""The only place that touches pika's callbacks: they become awaitables here.

pika's ``AsyncioConnection`` runs on the worker's event loop; every callback it
fires resolves a future, so the rest of the worker is plain async code.  Errors
are wrapped in :mod:`config.errors` types where they happen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from broker import pika_internals
from broker.async_channel import AmqpChannel
from broker.channel_rpc import or_closed
from broker.frame_coalescer import FrameCoalescer
from broker.url import BrokerUrl
from config.errors import (
    BrokerUnavailableError,
)


class AmqpConnection:
    """An open connection; ``closed`` resolves (with the reason) when it goes away."""

    def __init__(self, connection: AsyncioConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._connection = connection
        self._loop = loop
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        connection.add_on_close_callback(self._on_close)
        FrameCoalescer.install(connection, loop)

    @classmethod
    async def open(cls, broker: BrokerUrl, *, name: str) -> AmqpConnection:
        """Connect to the first reachable broker URL, or raise BrokerUnavailableError."""
        # A message whose properties pika cannot decode would otherwise drop the
        # connection and bring every message in flight on it back (see processor).
        pika_internals.install_guarded_decode()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def on_done(result: Any) -> None:
            if not done.done():
                done.set_result(result)

        workflow = AsyncioConnection.create_connection(
            broker.parameters(connection_name=name), on_done, custom_ioloop=loop
        )
        try:
            result = await done
        except asyncio.CancelledError:
            workflow.abort()
            raise
        if isinstance(result, BaseException):
            raise BrokerUnavailableError(
                f"cannot connect to RabbitMQ at {broker.redacted}: {result!r}"
            )
        return cls(result, loop)

    @property
    def is_open(self) -> bool:
        return bool(self._connection.is_open)

    def _on_close(self, _connection: Any, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)

    async def channel(self) -> AmqpChannel:
        """Open a new channel."""
        opened: asyncio.Future[Channel] = self._loop.create_future()
        try:
            self._connection.channel(on_open_callback=opened.set_result)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"cannot open a channel: {exc!r}") from None
        return AmqpChannel(await or_closed(opened, self.closed), self._loop)

    async def close(self) -> None:
        """Close the connection (unacked messages go back to their queues)."""
        if self._connection.is_open:
            try:
                self._connection.close()
            except pika.exceptions.AMQPError:
                return
        if not self.closed.done():
            await asyncio.wait({self.closed}, timeout=10)
