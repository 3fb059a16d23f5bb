"""A confirm-mode channel whose publishes do not wait for their confirm (for ``publish_many``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.spec

from broker import pika_internals
from broker.confirms import ConfirmTracker
from config.errors import NackedError, PublishError, UnroutableError
from config.topology import EVENTS_EXCHANGE
from producer.outgoing import Outgoing, nacked_error, unroutable_error

# Link-level failures (and their aftermath on a stale channel): reconnect.
LINK_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ChannelClosedByClient,
    ConnectionError,
)

# What a publish is tracked as: its index in the batch, and the event.
Token = tuple[int, Outgoing]


def _identity(token: Token) -> object:
    # What a basic.return tells of its message: the routing key and message id.
    return (token[1].routing_key, token[1].event_id)


def _unroutable(token: Token) -> UnroutableError:
    return unroutable_error(token[1].routing_key)


def _nacked(token: Token) -> NackedError:
    return nacked_error(token[1].event_id, token[1].event_type)


class ConfirmChannel:
    """A channel in confirm mode on a blocking connection, publishing without waiting.

    pika's ``BlockingChannel.basic_publish`` waits for each confirm in turn (one
    broker round trip, including the quorum queue's commit, per message).  Here
    the channel underneath the blocking wrapper is put in confirm mode with our
    own callbacks, and the blocking connection's I/O loop is driven only until
    enough confirms have arrived (through broker.pika_internals).
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._blocking = connection.channel()
        self._async_channel = pika_internals.channel_under(self._blocking)
        self._confirms: ConfirmTracker[Token] = ConfirmTracker(
            _identity, unroutable=_unroutable, nacked=_nacked
        )
        # Settled since the last take_settled(), each with None or its error.
        self._settled: list[tuple[Token, PublishError | None]] = []
        selected: list[bool] = []
        self._async_channel.add_on_return_callback(self._on_return)
        self._async_channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        self.wait_until(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        """False once the broker or the link closed the channel."""
        return bool(self._async_channel.is_open)

    @property
    def in_flight(self) -> int:
        """Events published and not yet confirmed."""
        return len(self._confirms)

    def publish(self, index: int, outgoing: Outgoing) -> None:
        """Write one event (``mandatory``) to pika's buffer; its outcome comes from take_settled."""
        self._async_channel.basic_publish(
            EVENTS_EXCHANGE,
            outgoing.routing_key,
            outgoing.body,
            outgoing.properties,
            mandatory=True,
        )
        self._confirms.track((index, outgoing))

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Send what is buffered and process input until ``ready()`` (or the channel closes).

        Raises ChannelClosedByBroker, or pika's connection errors.
        """
        pika_internals.join_send_buffers(self._connection)
        pika_internals.drive_until(self._blocking, ready)

    def take_settled(self) -> list[tuple[Token, PublishError | None]]:
        """The events settled since the last call, each with None (confirmed) or its error."""
        settled, self._settled = self._settled, []
        return settled

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self._confirms.returned((method.routing_key, properties.message_id))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._settled += self._confirms.settle(
            method.delivery_tag,
            multiple=bool(method.multiple),
            acked=isinstance(method, pika.spec.Basic.Ack),
        )
