"""One channel's request/reply calls as awaitables, and its ``closed`` future.

pika answers a channel method (``queue.declare``, ``basic.qos`` ...) through a
callback; :meth:`ChannelRpc.call` turns that into an await that fails with
BrokerUnavailableError if the channel closes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pika.exceptions
from pika.channel import Channel

from config.errors import BrokerUnavailableError


class ChannelRpc:
    """A pika channel's synchronous AMQP methods, awaited until a reply or the close."""

    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.loop = loop
        self.closed: asyncio.Future[BaseException] = loop.create_future()

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open) and not self.closed.done()

    async def call(self, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        """Run ``start(callback)`` and await the frame pika hands the callback."""
        done: asyncio.Future[Any] = self.loop.create_future()

        def resolve(frame: Any) -> None:
            if not done.done():
                done.set_result(frame)

        try:
            start(resolve)
        except (pika.exceptions.AMQPError, ValueError) as exc:
            raise BrokerUnavailableError(f"channel operation failed: {exc!r}") from None
        return await or_closed(done, self.closed)


async def or_closed(future: asyncio.Future[Any], closed: asyncio.Future[Any]) -> Any:
    """Await ``future`` unless ``closed`` resolves first."""
    await asyncio.wait({future, closed}, return_when=asyncio.FIRST_COMPLETED)
    if future.done():
        return future.result()
    future.cancel()
    raise BrokerUnavailableError(f"connection closed: {closed.result()!r}")
