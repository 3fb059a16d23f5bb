"""Change notices from the control plane, heard on a queue of the worker's own.

The API writes an endpoint to the store, then publishes a persistent JSON
notice to the fanout exchange ``webhooks.control``::

    {"version": 42, "account": "acme", "endpoint_id": "ep-...", "change": "updated"}

Every worker binds an exclusive, auto-delete queue there, so each replica hears
each notice.  A notice is only a hint to reload now: the worker reads the store
itself, and its periodic reconciliation covers a notice that never arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.async_channel import AmqpChannel, Message
from broker.async_connection import AmqpConnection
from config.topology import CONTROL_EXCHANGE

log = structlog.get_logger("worker")

# Notices are hints, and a worker that stalls must not make the broker hold an
# unbounded pile of them: beyond this, the oldest go (one reload covers them all).
_QUEUE_ARGUMENTS = {"x-queue-type": "classic", "x-max-length": 1000}
_PREFETCH = 50


@dataclass(frozen=True)
class ChangeNotice:
    """One announced change; only ``version`` is needed to act on it.

    ``pause_marker`` names a subscriber whose pause marker was just created or
    deleted (worker.pause announces it, with version 0 so that it never wakes
    the reconciler): each worker checks that marker at once.
    """

    version: int
    account: str | None = None
    endpoint_id: str | None = None
    change: str | None = None
    pause_marker: str | None = None


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def parse_notice(body: bytes) -> ChangeNotice:
    """Read a notice; ValueError says what is wrong with it."""
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    version = fields.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("version must be a non-negative integer")
    return ChangeNotice(
        version,
        _text(fields, "account"),
        _text(fields, "endpoint_id"),
        _text(fields, "change"),
        _text(fields, "pause_marker"),
    )


class ChangeNotices:
    """The worker's consumer of change notices, on a channel of its own."""

    def __init__(self, channel: AmqpChannel) -> None:
        self._channel = channel

    @classmethod
    async def start(
        cls, connection: AmqpConnection, on_notice: Callable[[ChangeNotice], None]
    ) -> ChangeNotices:
        """Declare this worker's notice queue, bind it and consume it; raises BrokerError."""
        channel = await connection.channel()
        queue = await channel.declare_queue(
            durable=False, exclusive=True, auto_delete=True, arguments=_QUEUE_ARGUMENTS
        )
        await channel.bind(queue, CONTROL_EXCHANGE, "")

        def handle(message: Message) -> None:
            try:
                notice = parse_notice(message.body)
            except ValueError as exc:
                log.warning("change_notice_invalid", error=str(exc))
            else:
                log.debug(
                    "change_notice",
                    version=notice.version,
                    account=notice.account,
                    endpoint=notice.endpoint_id,
                    change=notice.change,
                )
                on_notice(notice)
            message.ack()

        await channel.consume(queue, handle, prefetch=_PREFETCH)
        return cls(channel)

    @property
    def closed(self) -> asyncio.Future[BaseException]:
        """Resolves when the channel goes away (the worker then reconnects)."""
        return self._channel.closed

    async def close(self) -> None:
        """Stop hearing notices (the queue goes with the channel's consumer)."""
        await self._channel.close()
