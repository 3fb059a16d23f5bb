"""Publishing on the worker's channel and awaiting each publish's confirm.

pika's return and confirm callbacks feed one :class:`ConfirmTracker`; each
publish waits on its own future until the broker settles it.
"""

from __future__ import annotations

import asyncio

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.channel import Channel

from broker.channel_rpc import ChannelRpc
from broker.confirms import ConfirmTracker
from config.errors import BrokerUnavailableError, NackedError, UnroutableError

# A publish waiting for its confirm: (future, exchange, routing key, message id).
# A plain tuple because one is made per retry or dead letter published.
_Confirmable = tuple[asyncio.Future[None], str, str, str | None]


def _identity(publish: _Confirmable) -> object:
    return publish[1:]


def _unroutable(publish: _Confirmable) -> UnroutableError:
    return UnroutableError(f"no queue bound on {publish[1]!r} for {publish[2]!r}")


def _nacked(publish: _Confirmable) -> NackedError:
    return NackedError(f"broker refused the message for {publish[1]!r}")


class ConfirmedPublisher:
    """``mandatory`` publishes on one confirm-mode channel, each awaited to its confirm."""

    def __init__(self, rpc: ChannelRpc) -> None:
        self._rpc = rpc
        self._confirms: ConfirmTracker[_Confirmable] = ConfirmTracker(
            _identity, unroutable=_unroutable, nacked=_nacked
        )
        self._confirming = False

    def channel_lost(self, reason: BaseException) -> None:
        """Fail every publish still waiting for its confirm."""
        for future, *_ in self._confirms.channel_lost():
            if not future.done():
                future.set_exception(
                    BrokerUnavailableError(f"channel closed before the confirm: {reason!r}")
                )

    async def enable_confirms(self) -> None:
        """Put the channel in publisher-confirm mode and watch for returned messages."""
        channel = self._rpc.channel
        channel.add_on_return_callback(self._on_return)
        await self._rpc.call(
            lambda cb: channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=cb)
        )
        self._confirming = True

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
    ) -> None:
        """Publish ``mandatory`` and wait for the broker's confirm.

        Raises UnroutableError (no queue bound), NackedError (queue refused), or
        BrokerUnavailableError (channel lost before the confirm).
        """
        if not self._confirming:
            raise RuntimeError("enable_confirms() first")
        if not self._rpc.is_open:
            raise BrokerUnavailableError("channel is closed")
        future: asyncio.Future[None] = self._rpc.loop.create_future()
        tag = self._confirms.track((future, exchange, routing_key, properties.message_id))
        try:
            self._rpc.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except pika.exceptions.AMQPError as exc:
            self._confirms.forget(tag)
            raise BrokerUnavailableError(f"publish failed: {exc!r}") from None
        await future

    def _on_return(
        self,
        _ch: Channel,
        method: pika.spec.Basic.Return,
        properties: pika.BasicProperties,
        _body: bytes,
    ) -> None:
        self._confirms.returned((method.exchange, method.routing_key, properties.message_id))

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        settled = self._confirms.settle(
            method.delivery_tag,
            multiple=bool(method.multiple),
            acked=isinstance(method, pika.spec.Basic.Ack),
        )
        for publish, error in settled:
            future = publish[0]
            if future.done():
                continue  # its publisher gave up waiting (cancelled)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
