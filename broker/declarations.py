"""Declaring and unbinding on the worker's channel, one RPC at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika.exceptions

from broker.channel_rpc import ChannelRpc
from config.errors import BrokerUnavailableError, NotFoundError, TopologyError
from config.topology import Topology

_NOT_FOUND = 404  # AMQP reply code: no such queue or exchange


class Declarations:
    """Exchanges, queues and bindings declared (or unbound) over one channel."""

    def __init__(self, rpc: ChannelRpc) -> None:
        self._rpc = rpc

    async def _declaring(self, step: str, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        """One declaration RPC. The broker refusing it closes the channel: NotFoundError
        for a missing queue or exchange, TopologyError for any other refusal."""
        try:
            return await self._rpc.call(start)
        except BrokerUnavailableError:
            closed = self._rpc.closed
            reason = closed.result() if closed.done() else None
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
                error = NotFoundError if reason.reply_code == _NOT_FOUND else TopologyError
                raise error(f"{step} refused: {reason.reply_text}") from None
            raise

    async def declare(self, topology: Topology) -> None:
        """Declare ``topology`` (idempotent, never deletes); TopologyError names a refused step.

        One RPC at a time: the worker declares a few objects per new endpoint
        here, while whole topologies go through broker.declarer, pipelined.
        """
        for exchange in topology.exchanges:
            await self.declare_exchange(exchange.name, exchange.type)
        for queue in topology.queues:
            await self.declare_queue(queue.name, arguments=queue.arguments)
        for binding in topology.bindings:
            await self.bind(binding.queue, binding.exchange, binding.routing_key)

    async def declare_exchange(self, name: str, exchange_type: str) -> None:
        """Declare a durable exchange."""
        channel = self._rpc.channel
        await self._declaring(
            f"exchange {name}",
            lambda cb: channel.exchange_declare(name, exchange_type, durable=True, callback=cb),
        )

    async def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Declare a queue and return its name (the broker picks one when ``name`` is "")."""
        channel = self._rpc.channel
        frame = await self._declaring(
            f"queue {name or '(server-named)'}",
            lambda cb: channel.queue_declare(
                name,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
                callback=cb,
            ),
        )
        return str(frame.method.queue)

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` (binding twice is harmless)."""
        channel = self._rpc.channel
        await self._declaring(
            f"binding {exchange} -> {queue} ({routing_key!r})",
            lambda cb: channel.queue_bind(queue, exchange, routing_key=routing_key, callback=cb),
        )

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove that binding; removing one that does not exist is harmless, but a
        missing queue or exchange is a NotFoundError (and closes the channel)."""
        channel = self._rpc.channel
        await self._declaring(
            f"unbinding {exchange} -> {queue} ({routing_key!r})",
            lambda cb: channel.queue_unbind(queue, exchange, routing_key=routing_key, callback=cb),
        )
