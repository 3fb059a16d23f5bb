"""Publish webhook events to RabbitMQ with publisher confirms.

A :class:`Publisher` owns one blocking pika connection; use one per thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import pika
import pika.exceptions
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from config import message
from config.broker import BrokerUrl
from config.envelope import build_envelope, new_event_id, validate_event_id
from config.errors import (
    BrokerUnavailableError,
    NackedError,
    PublishError,
    UnroutableError,
)
from config.topology import EVENTS_EXCHANGE, Topology, apply_topology, build_topology

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger("producer")

T = TypeVar("T")

# AMQP reply codes that retrying cannot fix.
_ACCESS_REFUSED = 403
_NOT_FOUND = 404
_NOT_ALLOWED = 530  # e.g. the vhost does not exist

_LOGIN_ERRORS = (
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
    pika.exceptions.AuthenticationError,
)


class _Transient(Exception):
    """A connection-level failure worth reconnecting for; never leaves this module."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        self._connect_attempts = connect_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._connect_timeout = connect_timeout_seconds
        self._heartbeat = heartbeat
        self._connection_name = connection_name
        self._connection: Any = None
        self._channel: Any = None
        self._log = log.bind(broker=broker.redacted)

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
        self._with_retries(self._ensure_channel)

    def close(self) -> None:
        """Close the connection; a later publish opens a new one. Safe to call twice."""
        if self._connection is not None:
            self._drop_connection()
            self._log.debug("broker_disconnected")

    # --- publishing ---------------------------------------------------------

    def publish(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> str:
        """Publish one event and wait for the broker's confirm; return its event id.

        Raises PayloadError (invalid event or data), UnroutableError (no queue is
        bound for ``event_type``), NackedError (the broker refused it) or
        BrokerUnavailableError (no connection after the retries).
        """
        event_id = new_event_id() if event_id is None else validate_event_id(event_id)
        now = datetime.now(UTC)
        body = build_envelope(event_type, data, now=now)
        properties = pika.BasicProperties(
            content_type=message.CONTENT_TYPE,
            delivery_mode=message.PERSISTENT,
            message_id=event_id,
            type=event_type,
            timestamp=int(now.timestamp()),
        )
        # "event" is structlog's own key (the log message), hence event_type.
        event_log = self._log.bind(event_id=event_id, event_type=event_type)

        def attempt() -> None:
            channel = self._ensure_channel()
            try:
                channel.basic_publish(
                    EVENTS_EXCHANGE, event_type, body, properties=properties, mandatory=True
                )
            except pika.exceptions.UnroutableError:
                event_log.warning("event_unroutable")
                raise UnroutableError(
                    f"no subscriber queue is bound for {event_type!r} on exchange "
                    f"{EVENTS_EXCHANGE!r}: check the subscribers' event patterns "
                    "(and that the topology has been declared)"
                ) from None
            except pika.exceptions.NackError:
                event_log.warning("event_nacked")
                raise NackedError(
                    f"RabbitMQ refused event {event_id} ({event_type!r}); a subscriber "
                    "queue may be full or unavailable"
                ) from None
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._channel = None
                if exc.reply_code == _NOT_FOUND:
                    raise UnroutableError(
                        f"exchange {EVENTS_EXCHANGE!r} does not exist, so no subscriber queue "
                        f"is bound for {event_type!r}: declare the topology first "
                        "(start the worker, or set WEBHOOK_CONFIG for the producer)"
                    ) from None
                raise PublishError(
                    f"RabbitMQ closed the channel while publishing {event_type!r}: "
                    f"{exc.reply_code} {exc.reply_text}"
                ) from None
            except _connection_errors() as exc:
                # The broker may have stored the message before the link broke;
                # publishing again under the same event id keeps delivery
                # at-least-once, and receivers can drop the repeat by X-Webhook-Id.
                self._drop_connection()
                raise _Transient(self._describe(exc)) from None

        started = time.monotonic()
        self._with_retries(attempt)
        event_log.info("event_published", seconds=round(time.monotonic() - started, 4))
        return event_id

    def publish_many(self, events: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
        """Publish ``(event_type, data)`` pairs in order; return their event ids.

        Stops at the first failure: the events before it are published.
        """
        return [self.publish(event_type, data) for event_type, data in events]

    # --- connection handling ------------------------------------------------

    def _with_retries(self, operation: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self._connect_attempts)
            | stop_after_delay(self._max_retry_seconds),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(operation)
        except _Transient as exc:
            attempts = retrying.statistics.get("attempt_number", self._connect_attempts)
            self._log.warning("broker_unavailable", attempts=attempts, reason=exc.reason)
            raise BrokerUnavailableError(
                f"RabbitMQ at {self.broker.redacted} is unavailable: gave up after "
                f"{attempts} attempt(s) in {time.monotonic() - started:.1f} s; "
                f"last error: {exc.reason}"
            ) from None

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._log.warning(
            "broker_connection_failed",
            attempt=state.attempt_number,
            retry_in_seconds=round(state.upcoming_sleep, 3),
            reason=error.reason if isinstance(error, _Transient) else repr(error),
        )

    def _ensure_channel(self) -> Any:
        if self._connection is not None and self._connection.is_open:
            if self._channel is not None and self._channel.is_open:
                return self._channel
            try:
                self._channel = self._open_channel(self._connection)
                return self._channel
            except _connection_errors() as exc:
                self._drop_connection()
                raise _Transient(self._describe(exc)) from None
        self._drop_connection()
        self._connection = self._open_connection()
        try:
            self._channel = self._open_channel(self._connection)
            if self.declare is not None:
                apply_topology(self._channel, self.declare)
        except _connection_errors() as exc:
            self._drop_connection()
            raise _Transient(self._describe(exc)) from None
        except BrokerUnavailableError as exc:  # apply_topology's wrapper of a lost link
            self._drop_connection()
            raise _Transient(self._scrub(str(exc))) from None
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
            raise _Transient(self._describe(exc)) from None
        except pika.exceptions.AMQPError as exc:
            raise _Transient(self._describe(exc)) from None

    @staticmethod
    def _open_channel(connection: Any) -> Any:
        channel = connection.channel()
        channel.confirm_delivery()
        return channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
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


def _connection_errors() -> tuple[type[BaseException], ...]:
    # Link-level failures (and their aftermath on a stale channel): reconnect.
    return (
        pika.exceptions.AMQPConnectionError,
        pika.exceptions.ChannelWrongStateError,
        pika.exceptions.ChannelClosedByClient,
        ConnectionError,
    )
