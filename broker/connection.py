"""Short-lived blocking connections for one-off jobs (declaring, markers, the registry)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from broker import pika_internals
from broker.url import BrokerUrl
from config.errors import BrokerError, BrokerUnavailableError


@contextlib.contextmanager
def blocking_connection(
    broker: BrokerUrl, *, name: str, operation: str
) -> Iterator[BlockingConnection]:
    """A short-lived blocking connection for one job (declaring, checking markers).

    pika errors become the project's: a refused method is BrokerError, anything
    else (on connect or inside the block) BrokerUnavailableError, both naming
    ``operation``; the connection is always closed.
    """
    # A message whose properties pika cannot decode must not drop the connection
    # (the dead-letter tools read whatever a DLQ holds).
    pika_internals.install_guarded_decode()
    try:
        connection = pika.BlockingConnection(broker.parameters(connection_name=name))
    except pika_internals.CONNECT_ERRORS as exc:
        raise BrokerUnavailableError(
            f"cannot connect to RabbitMQ at {broker.redacted}: {exc!r}"
        ) from None
    try:
        yield connection
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise BrokerError(f"{operation}: RabbitMQ refused: {exc.reply_text}") from None
    except pika.exceptions.AMQPError as exc:
        # Anything unacked returns to its queue when the connection goes.
        raise BrokerUnavailableError(f"{operation} failed: {exc!r}") from None
    finally:
        if connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
