"""Confirmed publishes on a blocking connection, a window at a time instead of one by one.

pika's ``BlockingChannel.basic_publish`` waits for each confirm in turn: one
broker round trip, including a quorum queue's commit, per message.  Here the
channel under the blocking wrapper is put in confirm mode with our own
callbacks (as :mod:`producer.channel` does): :meth:`ConfirmWindow.publish`
only writes, and :meth:`ConfirmWindow.settle` drives the connection until
every publish since the last settle is confirmed, returning each one's outcome.
Every publish is ``mandatory``: one no queue takes settles as UnroutableError.
"""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingConnection

from broker import pika_internals
from broker.confirms import ConfirmTracker
from config.errors import BrokerError, BrokerUnavailableError, PublishError, TopologyError


def _identity(token: tuple[int, str, str | None]) -> object:
    # What a basic.return tells of its message: the routing key and message id.
    return token[1:]


class ConfirmWindow:
    """One confirm-mode channel of ``connection``; publish a window, then settle it."""

    def __init__(self, connection: BlockingConnection) -> None:
        self._connection = connection
        self._blocking = connection.channel()
        self._channel = pika_internals.channel_under(self._blocking)
        self._confirms: ConfirmTracker[tuple[int, str, str | None]] = ConfirmTracker(_identity)
        self._outcomes: dict[int, PublishError | None] = {}
        self._published = 0
        selected: list[bool] = []
        self._channel.add_on_return_callback(self._on_return)
        self._channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        self._drive(lambda: bool(selected))

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        """Write one message (``mandatory``); its outcome comes from the next settle()."""
        self._channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self._confirms.track((self._published, routing_key, properties.message_id))
        self._published += 1

    def settle(self) -> list[PublishError | None]:
        """Wait for every publish since the last settle; each one's outcome, in publish order:
        None (confirmed), UnroutableError (no queue took it) or NackedError.

        BrokerError (TopologyError for a missing exchange) if the channel or the
        connection is lost first: what was not yet confirmed may or may not arrive.
        """
        self._drive(lambda: len(self._confirms) == 0)
        if len(self._confirms):
            raise BrokerUnavailableError("the channel closed before every publish was confirmed")
        outcomes = [self._outcomes[index] for index in sorted(self._outcomes)]
        self._outcomes.clear()
        return outcomes

    def _drive(self, ready: Any) -> None:
        try:
            pika_internals.join_send_buffers(self._connection)
            pika_internals.drive_until(self._blocking, ready)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise TopologyError(f"RabbitMQ: {exc.reply_text}") from None
            raise BrokerError(f"RabbitMQ closed the channel: {exc.reply_text}") from None
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"lost RabbitMQ while publishing: {exc!r}") from None

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self._confirms.returned((method.routing_key, properties.message_id))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        settled = self._confirms.settle(
            method.delivery_tag,
            multiple=bool(method.multiple),
            acked=isinstance(method, pika.spec.Basic.Ack),
        )
        for (index, _key, _id), error in settled:
            self._outcomes[index] = error
