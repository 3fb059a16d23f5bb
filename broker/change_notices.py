"""Endpoint change notices on the control exchange: their format, and a blocking publisher.

After every committed change to the endpoint store, ``webhook-api`` publishes
one notice to the fanout exchange ``webhooks.control``
(``config.topology.CONTROL_EXCHANGE``); each worker binds a queue of its own
and reloads what changed.  A notice only hastens what the workers' periodic
reconciliation with the store does anyway, so a lost one delays a change and
never loses it.  The body is JSON::

    {"version": 42, "account": "acct_1", "endpoint_id": "ep-...", "change": "updated"}

``change`` is one of ``created``, ``updated``, ``deleted``, ``paused``,
``resumed``, ``rotated``; ``version`` is the store version the change took.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, get_args

import orjson
import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from broker import pika_internals
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, PayloadError
from config.topology import CONTROL_EXCHANGE
from wire import contract

ChangeKind = Literal["created", "updated", "deleted", "paused", "resumed", "rotated"]
CHANGE_KINDS: tuple[str, ...] = get_args(ChangeKind)


@dataclass(frozen=True)
class ChangeNotice:
    """One committed change to one endpoint."""

    version: int
    account: str
    endpoint_id: str
    change: ChangeKind

    def to_json(self) -> bytes:
        """The message body."""
        return orjson.dumps(
            {
                "version": self.version,
                "account": self.account,
                "endpoint_id": self.endpoint_id,
                "change": self.change,
            }
        )

    @classmethod
    def from_json(cls, body: bytes) -> ChangeNotice:
        """Read a message body; PayloadError when it is not a change notice."""
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise PayloadError("change notice: not JSON") from None
        if not isinstance(value, dict):
            raise PayloadError("change notice: not a JSON object")
        version, account = value.get("version"), value.get("account")
        endpoint_id, change = value.get("endpoint_id"), value.get("change")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise PayloadError("change notice: version must be a whole number")
        if not isinstance(account, str) or not isinstance(endpoint_id, str):
            raise PayloadError("change notice: account and endpoint_id must be strings")
        if change not in CHANGE_KINDS:
            raise PayloadError(f"change notice: change must be one of {', '.join(CHANGE_KINDS)}")
        return cls(version, account, endpoint_id, change)


class ChangeNoticePublisher:
    """Publishes notices over one long-lived connection, reconnecting when it was lost.

    Blocking and not thread-safe: call it from one thread only (the API runs it
    on a dedicated one). Each publish waits for the broker's confirm.
    """

    def __init__(self, broker: BrokerUrl, *, connection_name: str = "webhook-api") -> None:
        self._broker = broker
        self._name = connection_name
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def __repr__(self) -> str:
        return f"ChangeNoticePublisher({self._broker.redacted!r})"

    def publish(self, notice: ChangeNotice) -> None:
        """Publish persistently to the control exchange (declared if missing).

        A connection found dead is replaced once; BrokerUnavailableError when
        that fails too.
        """
        body = notice.to_json()
        properties = pika.BasicProperties(
            content_type=contract.CONTENT_TYPE, delivery_mode=contract.PERSISTENT
        )
        for attempt in (1, 2):
            try:
                channel = self._open_channel()
                # Not mandatory: with no worker bound, nobody needs the notice.
                channel.basic_publish(CONTROL_EXCHANGE, "", body, properties)
                return
            except pika_internals.CONNECT_ERRORS as exc:
                self.close()
                if attempt == 2:
                    raise BrokerUnavailableError(
                        f"publishing a change notice to {self._broker.redacted} failed: {exc!r}"
                    ) from None

    def keep_alive(self) -> None:
        """Answer the broker's heartbeats while idle (a dead connection is dropped)."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(time_limit=0)
        except pika.exceptions.AMQPError:
            self.close()

    def close(self) -> None:
        """Close the connection, if any (the next publish opens a new one)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def _open_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(
                self._broker.parameters(connection_name=self._name)
            )
        channel = self._connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        self._channel = channel
        return channel
