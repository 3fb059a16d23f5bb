"""Publish webhook events to RabbitMQ with publisher confirms.

A :class:`Publisher` owns one blocking pika connection; use one per thread.
Batches are run by :mod:`producer.batch` on a :mod:`producer.channel`, events
are built by :mod:`producer.outgoing`, reconnects are paced by
:mod:`producer.backoff`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pika
import pika.exceptions
import structlog

from broker import pika_internals
from broker.declarer import apply_topology
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError
from config.topology import EVENTS_EXCHANGE, Topology, build_topology
from producer import metrics
from producer.backoff import Backoff, Transient
from producer.batch import DEFAULT_WINDOW, BatchRun, Event
from producer.channel import LINK_ERRORS, ConfirmChannel
from producer.outgoing import closed_by_broker_error, nacked_error, prepare, unroutable_error

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger("producer")

__all__ = ["DEFAULT_WINDOW", "Publisher"]

# AMQP reply codes that retrying cannot fix.
_ACCESS_REFUSED = 403
_NOT_ALLOWED = 530  # e.g. the vhost does not exist

_LOGIN_ERRORS = (
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
    pika.exceptions.AuthenticationError,
)


class Publisher:
    """Publishes events to the ``webhooks.events`` exchange, confirmed and ``mandatory``.

    The connection opens on first use (or on ``with``/:meth:`connect`) and is
    re-opened after a loss. ``declare`` is applied on every (re)connect, so a
    broker that lost its definitions gets them back.
    """

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        declare: Topology | None = None,
        connect_attempts: int = 5,
        max_retry_seconds: float = 30.0,
        backoff_initial_seconds: float = 0.25,
        backoff_max_seconds: float = 5.0,
        connect_timeout_seconds: float = 10.0,
        heartbeat: int = 30,
        connection_name: str = "webhook-publisher",
    ) -> None:
        if connect_attempts < 1:
            raise ValueError("connect_attempts must be at least 1")
        self.broker = broker
        self.declare = declare
        self._connect_timeout = connect_timeout_seconds
        self._heartbeat = heartbeat
        self._connection_name = connection_name
        self._connection: Any = None
        self._channel: Any = None
        self._batch_channel: ConfirmChannel | None = None
        self._log = log.bind(broker=broker.redacted)
        self._backoff = Backoff(
            attempts=connect_attempts,
            max_seconds=max_retry_seconds,
            initial_seconds=backoff_initial_seconds,
            max_wait_seconds=backoff_max_seconds,
            where=broker.redacted,
            log=self._log,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Publisher:
        """A publisher for ``settings.broker`` that declares the topology if subscribers are set.

        Without subscribers nothing is declared: the worker owns the topology and
        publishing then fails loudly (unroutable) instead of creating stray queues.
        """
        if settings.subscribers and "declare" not in kwargs:
            kwargs["declare"] = build_topology(settings.subscribers, settings.retry)
        return cls(settings.broker, **kwargs)

    # --- life cycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.broker.redacted!r})"

    def connect(self) -> None:
        """Open the connection now (with retries) instead of on the first publish."""
        self._backoff.run(self._ensure_channel)

    def close(self) -> None:
        """Close the connection; a later publish opens a new one. Safe to call twice."""
        if self._connection is not None:
            self._drop_connection()
            self._log.debug("broker_disconnected")

    # --- publishing ---------------------------------------------------------

    def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        account: str,
        event_id: str | None = None,
    ) -> str:
        """Publish one event of ``account`` and wait for the broker's confirm; return its id.

        Only that account's endpoints (and explicit all-accounts ones) receive it.
        Raises PayloadError (invalid account, event or data), UnroutableError (no
        endpoint of the account takes ``event_type``), NackedError (the broker
        refused it) or BrokerUnavailableError (no connection after the retries).
        """
        with metrics.event_outcome(event_type):
            return self._publish_one(event_type, data, account, event_id)

    def _publish_one(
        self, event_type: str, data: dict[str, Any], account: str, event_id: str | None
    ) -> str:
        outgoing = prepare(account, event_type, data, event_id)
        event_id = outgoing.event_id
        # "event" is structlog's own key (the log message), hence event_type.
        event_log = self._log.bind(event_id=event_id, event_type=event_type, account=account)

        def attempt() -> None:
            channel = self._ensure_channel()
            try:
                channel.basic_publish(
                    EVENTS_EXCHANGE,
                    outgoing.routing_key,
                    outgoing.body,
                    properties=outgoing.properties,
                    mandatory=True,
                )
            except pika.exceptions.UnroutableError:
                event_log.warning("event_unroutable")
                raise unroutable_error(outgoing.routing_key) from None
            except pika.exceptions.NackError:
                event_log.warning("event_nacked")
                raise nacked_error(event_id, event_type) from None
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._channel = None
                raise closed_by_broker_error(exc, event_type) from None
            except LINK_ERRORS as exc:
                # The broker may have stored the message before the link broke;
                # publishing again under the same event id keeps delivery
                # at-least-once, and receivers can drop the repeat by X-Webhook-Id.
                self._drop_connection()
                raise Transient(self._describe(exc)) from None

        started = time.monotonic()
        with metrics.timed("publish"):
            self._backoff.run(attempt)
        event_log.info("event_published", seconds=round(time.monotonic() - started, 4))
        return event_id

    def publish_many(
        self,
        events: Iterable[Event],
        *,
        window: int = DEFAULT_WINDOW,
    ) -> list[str]:
        """Publish ``(account, event_type, data)`` or ``(account, event_type, data, event_id)``
        items in order.

        Returns the event ids once the broker has confirmed every event. Confirms
        are pipelined: up to ``window`` events are on the wire at once instead of
        one round trip per event, which is several times faster than calling
        :meth:`publish` in a loop. ``events`` is consumed lazily, so a generator
        of any length works in constant memory.

        Stops at the first failure, raising what :meth:`publish` would raise
        (PayloadError, UnroutableError, NackedError, BrokerUnavailableError),
        after the confirms of the events already sent have arrived: the events
        before the failed one are published; events after it that were already
        in flight may be published too (pass your own event ids to retry them
        without duplicates on the receiving side). After a lost connection the
        unconfirmed events are published again under the same ids on a new one.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        started = time.monotonic()
        # Each event's outcome is counted by the batch, where it becomes known.
        with metrics.timed("publish_many"):
            ids = BatchRun(self, window, self._log).run(events)
        self._log.info(
            "events_published", count=len(ids), seconds=round(time.monotonic() - started, 4)
        )
        return ids

    # --- what a batch run uses (producer.batch.ChannelSource) ---------------

    @property
    def connect_attempts(self) -> int:
        """Connection attempts per operation; also the lost connections a batch rides out."""
        return self._backoff.attempts

    def open_confirm_channel(self) -> ConfirmChannel:
        """The pipelined-confirm channel, (re)connecting with the retry policy.

        Raises BrokerUnavailableError when the retries are used up.
        """
        return self._backoff.run(self._ensure_batch_channel)

    def connection_lost(self, exc: BaseException) -> str:
        """Drop the connection ``exc`` came from; return why it broke, passwords masked."""
        reason = self._describe(exc)
        self._drop_connection()
        return reason

    # --- connection handling ------------------------------------------------

    def _ensure_channel(self) -> Any:
        if self._connection is not None and self._connection.is_open:
            if self._channel is not None and self._channel.is_open:
                return self._channel
            try:
                self._channel = self._open_channel(self._connection)
                return self._channel
            except LINK_ERRORS as exc:
                self._drop_connection()
                raise Transient(self._describe(exc)) from None
        self._drop_connection()
        self._connection = self._open_connection()
        try:
            self._channel = self._open_channel(self._connection)
            if self.declare is not None:
                apply_topology(self._channel, self.declare)
        except LINK_ERRORS as exc:
            self._drop_connection()
            raise Transient(self._describe(exc)) from None
        except BrokerUnavailableError as exc:  # apply_topology's wrapper of a lost link
            self._drop_connection()
            raise Transient(self._scrub(str(exc))) from None
        except BaseException:
            self._drop_connection()
            raise
        self._log.info("broker_connected", declared=self.declare is not None)
        return self._channel

    def _open_connection(self) -> Any:
        parameters = self.broker.parameters(
            heartbeat=self._heartbeat, connection_name=self._connection_name
        )
        for params in parameters:
            # Bounds a connect to a host that drops packets, so that the retry
            # policy's total time means something.
            params.socket_timeout = self._connect_timeout
            params.stack_timeout = self._connect_timeout * 1.5
        try:
            return pika.BlockingConnection(parameters)
        except _LOGIN_ERRORS as exc:
            raise BrokerUnavailableError(
                f"RabbitMQ at {self.broker.redacted} refused the login: check the user, "
                f"password and vhost ({type(exc).__name__})"
            ) from None
        except pika.exceptions.ConnectionClosedByBroker as exc:
            if exc.reply_code in (_ACCESS_REFUSED, _NOT_ALLOWED):
                raise BrokerUnavailableError(
                    f"RabbitMQ at {self.broker.redacted} refused the connection: "
                    f"{exc.reply_code} {self._scrub(exc.reply_text)}"
                ) from None
            raise Transient(self._describe(exc)) from None
        except pika_internals.CONNECT_ERRORS as exc:
            # AMQPError, or a handshake a busy broker timed out (see CONNECT_ERRORS).
            raise Transient(self._describe(exc)) from None

    @staticmethod
    def _open_channel(connection: Any) -> Any:
        channel = connection.channel()
        channel.confirm_delivery()
        return channel

    def _ensure_batch_channel(self) -> ConfirmChannel:
        """The pipelined-confirm channel on the current connection (opened on demand)."""
        self._ensure_channel()
        # A channel the broker closed mid-batch is not open: a new one replaces it.
        if self._batch_channel is not None and self._batch_channel.is_open:
            return self._batch_channel
        try:
            self._batch_channel = ConfirmChannel(self._connection)
        except LINK_ERRORS as exc:
            self._drop_connection()
            raise Transient(self._describe(exc)) from None
        return self._batch_channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._batch_channel = None
        if connection is not None and connection.is_open:
            # A half-dead link may fail in any way on close; it is gone either way.
            with contextlib.suppress(Exception):
                connection.close()

    def _describe(self, exc: BaseException) -> str:
        # pika's connection errors have an empty str(); the repr names the cause.
        return self._scrub(str(exc) or repr(exc))[:500]

    def _scrub(self, text: str) -> str:
        """``text`` with the broker passwords masked, whatever library produced it."""
        for params in self.broker.parameters():
            password = getattr(params.credentials, "password", "")
            # A very short password would mask unrelated letters all over the text.
            if password and len(password) >= 4:
                text = text.replace(password, "***")
        return text
