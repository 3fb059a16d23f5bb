"""Publish webhook events to RabbitMQ with publisher confirms.

A :class:`Publisher` owns one blocking pika connection; use one per thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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

from broker.declarer import apply_topology
from broker.url import BrokerUrl
from config.errors import (
    BrokerUnavailableError,
    NackedError,
    PayloadError,
    PublishError,
    UnroutableError,
)
from config.topology import EVENTS_EXCHANGE, Topology, build_topology
from wire import contract
from wire.envelope import build_envelope, new_event_id, validate_event_id

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger("producer")

T = TypeVar("T")

# Events of one publish_many on the wire at once, waiting for their confirms.
DEFAULT_WINDOW = 512
# Events of a list written to the socket together.
_BURST = 32

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
        self._batch_channel: _ConfirmChannel | None = None
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
        event_id, body, properties = _prepare(event_type, data, event_id)
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
                raise _unroutable(event_type) from None
            except pika.exceptions.NackError:
                event_log.warning("event_nacked")
                raise _nacked(event_id, event_type) from None
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._channel = None
                raise _closed_by_broker(exc, event_type) from None
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

    def publish_many(
        self,
        events: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]],
        *,
        window: int = DEFAULT_WINDOW,
    ) -> list[str]:
        """Publish ``(event_type, data)`` or ``(event_type, data, event_id)`` items in order.

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
        run = _BatchRun(self, window)
        # Events already in a list are all ready: write them in bursts. Items of a
        # generator may come slowly, so each is sent before asking for the next.
        burst = _BURST if isinstance(events, Sequence) else 1
        try:
            for count, item in enumerate(events, 1):
                event_type, data = item[0], item[1]
                given_id = item[2] if len(item) > 2 else None
                try:
                    outgoing = _Outgoing(event_type, *_prepare(event_type, data, given_id))
                except PayloadError as exc:
                    run.fail(len(run.ids), exc)
                    break
                run.send(outgoing, flush=count % burst == 0)
                if run.failure is not None:
                    break
            run.finish()
        finally:
            run.close()
        self._log.info(
            "events_published", count=len(run.ids), seconds=round(time.monotonic() - started, 4)
        )
        return run.ids

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

    def _ensure_batch_channel(self) -> _ConfirmChannel:
        """The pipelined-confirm channel on the current connection (opened on demand)."""
        self._ensure_channel()
        if self._batch_channel is not None and self._batch_channel.is_open:
            return self._batch_channel
        try:
            self._batch_channel = _ConfirmChannel(self._connection)
        except _connection_errors() as exc:
            self._drop_connection()
            raise _Transient(self._describe(exc)) from None
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


def _prepare(
    event_type: str, data: dict[str, Any], event_id: str | None
) -> tuple[str, bytes, pika.BasicProperties]:
    """Validate one event; return its id, body and AMQP properties."""
    event_id = new_event_id() if event_id is None else validate_event_id(event_id)
    now = datetime.now(UTC)
    body = build_envelope(event_type, data, now=now)
    properties = pika.BasicProperties(
        content_type=contract.CONTENT_TYPE,
        delivery_mode=contract.PERSISTENT,
        message_id=event_id,
        type=event_type,
        timestamp=int(now.timestamp()),
    )
    return event_id, body, properties


def _unroutable(event_type: str) -> UnroutableError:
    return UnroutableError(
        f"no subscriber queue is bound for {event_type!r} on exchange "
        f"{EVENTS_EXCHANGE!r}: check the subscribers' event patterns "
        "(and that the topology has been declared)"
    )


def _nacked(event_id: str, event_type: str) -> NackedError:
    return NackedError(
        f"RabbitMQ refused event {event_id} ({event_type!r}); a subscriber "
        "queue may be full or unavailable"
    )


def _closed_by_broker(exc: pika.exceptions.ChannelClosedByBroker, event_type: str) -> PublishError:
    if exc.reply_code == _NOT_FOUND:
        return UnroutableError(
            f"exchange {EVENTS_EXCHANGE!r} does not exist, so no subscriber queue "
            f"is bound for {event_type!r}: declare the topology first "
            "(start the worker, or set WEBHOOK_CONFIG for the producer)"
        )
    return PublishError(
        f"RabbitMQ closed the channel while publishing {event_type!r}: "
        f"{exc.reply_code} {exc.reply_text}"
    )


@dataclass(frozen=True)
class _Outgoing:
    event_type: str
    event_id: str
    body: bytes
    properties: pika.BasicProperties


class _ConfirmChannel:
    """A confirm-mode channel whose publishes do not wait for their confirm.

    pika's ``BlockingChannel.basic_publish`` waits for each confirm in turn (one
    broker round trip, including the quorum queue's commit, per message).  Here
    the channel underneath the blocking wrapper is put in confirm mode with our
    own callbacks, and the blocking connection's I/O loop is driven only until
    enough confirms have arrived.  That uses two pika internals (``_impl`` and
    ``_flush_output``), present and unchanged in pika 1.x.
    """

    def __init__(self, connection: Any) -> None:
        self._blocking = connection.channel()
        self._impl = self._blocking._impl
        self._transport = getattr(connection._impl, "_transport", None)
        self._sequence = 0
        # sequence -> (batch index, routing key, message id), oldest first.
        self.pending: dict[int, tuple[int, str, str | None]] = {}
        self._returned: set[int] = set()
        # Settled since the last take_settled(): (batch index, None or the failure kind).
        self._settled: list[tuple[int, str | None]] = []
        selected: list[bool] = []
        self._impl.add_on_return_callback(self._on_return)
        self._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        self.wait_until(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        return bool(self._impl.is_open)

    def publish(self, index: int, outgoing: _Outgoing) -> None:
        self._impl.basic_publish(
            EVENTS_EXCHANGE,
            outgoing.event_type,
            outgoing.body,
            outgoing.properties,
            mandatory=True,
        )
        self._sequence += 1
        self.pending[self._sequence] = (index, outgoing.event_type, outgoing.event_id)

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Send what is buffered and process input until ``ready()`` (or the channel closes).

        Raises ChannelClosedByBroker, or pika's connection errors.
        """
        # pika queues every frame (three per message) as its own buffer and sends
        # each with its own send(); one joined buffer needs one.
        buffers = getattr(self._transport, "_tx_buffers", None)
        if buffers is not None and len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)
        self._blocking._flush_output(ready)

    def take_settled(self) -> list[tuple[int, str | None]]:
        settled, self._settled = self._settled, []
        return settled

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        # A basic.return has no sequence number but precedes the confirm of its
        # message: mark the oldest unconfirmed publish with the same identity.
        identity = (method.routing_key, properties.message_id)
        for sequence, (_, routing_key, message_id) in self.pending.items():
            if (routing_key, message_id) == identity and sequence not in self._returned:
                self._returned.add(sequence)
                return

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        acked = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:
            sequences = []
            for sequence in self.pending:
                if sequence > tag:
                    break
                sequences.append(sequence)
        else:
            sequences = [tag]
        for sequence in sequences:
            entry = self.pending.pop(sequence, None)
            if entry is None:
                continue
            if sequence in self._returned:
                self._returned.discard(sequence)
                self._settled.append((entry[0], "unroutable"))
            else:
                self._settled.append((entry[0], None if acked else "nacked"))


class _BatchRun:
    """The state of one ``publish_many`` call: ids, unconfirmed events, first failure."""

    def __init__(self, publisher: Publisher, window: int) -> None:
        self.publisher = publisher
        self.window = window
        self.ids: list[str] = []
        self.unconfirmed: dict[int, _Outgoing] = {}
        self.failure: tuple[int, BaseException] | None = None
        self.channel: _ConfirmChannel | None = None
        self._reconnects = 0

    def fail(self, index: int, error: BaseException) -> None:
        if self.failure is None or index < self.failure[0]:
            self.failure = (index, error)

    def send(self, outgoing: _Outgoing, *, flush: bool = True) -> None:
        """Put one event on the wire (``flush=False``: leave it buffered for now)."""
        index = len(self.ids)
        self.ids.append(outgoing.event_id)
        self.unconfirmed[index] = outgoing
        window = self.window

        def publish(channel: _ConfirmChannel) -> None:
            channel.publish(index, outgoing)
            # Keep at most ``window`` events waiting for their confirm.
            if flush or len(channel.pending) >= window:
                channel.wait_until(lambda: len(channel.pending) < window)

        # After a reconnect the resend already includes this event.
        self._io(publish, skip_after_resend=True)

    def finish(self) -> None:
        """Wait for every outstanding confirm; raise the first failure, if any."""
        self._io(lambda channel: channel.wait_until(lambda: not channel.pending))
        if self.failure is not None:
            index, error = self.failure
            if isinstance(error, PublishError) and not isinstance(error, BrokerUnavailableError):
                error.args = (
                    f"{error.args[0]} (event {index + 1} of the batch; the {index} before it "
                    "are published)",
                )
            raise error

    def close(self) -> None:
        self.unconfirmed.clear()

    def _collect(self, channel: _ConfirmChannel) -> None:
        for index, problem in channel.take_settled():
            outgoing = self.unconfirmed.pop(index, None)
            if problem is None or outgoing is None:
                continue
            self.publisher._log.warning(f"event_{problem}", event_id=outgoing.event_id)
            if problem == "unroutable":
                self.fail(index, _unroutable(outgoing.event_type))
            else:
                self.fail(index, _nacked(outgoing.event_id, outgoing.event_type))

    def _io(
        self, operation: Callable[[_ConfirmChannel], None], *, skip_after_resend: bool = False
    ) -> None:
        """Run ``operation`` on the batch channel; after a lost link, reconnect and resend."""
        publisher = self.publisher
        while True:
            if self.channel is None:
                self.channel = publisher._with_retries(publisher._ensure_batch_channel)
                # A new channel knows nothing of the old one's messages: send every
                # unconfirmed event again (same ids, so this stays at-least-once).
                if not self._attempt(self._resend):
                    continue
                if skip_after_resend:
                    return
            if self._attempt(operation):
                return

    def _resend(self, channel: _ConfirmChannel) -> None:
        for index in sorted(self.unconfirmed):
            channel.publish(index, self.unconfirmed[index])

    def _attempt(self, operation: Callable[[_ConfirmChannel], None]) -> bool:
        publisher = self.publisher
        channel = self.channel
        assert channel is not None
        try:
            operation(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            publisher._batch_channel = self.channel = None
            first = min(self.unconfirmed, default=len(self.ids) - 1)
            event_type = self.unconfirmed[first].event_type if self.unconfirmed else ""
            self.unconfirmed.clear()
            error = _closed_by_broker(exc, event_type)
            self.fail(first, error)
            raise error from None
        except _connection_errors() as exc:
            reason = publisher._describe(exc)
            publisher._drop_connection()
            self.channel = None
            self._reconnects += 1
            if self._reconnects > publisher._connect_attempts:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {publisher.broker.redacted} kept dropping the connection "
                    f"during a batch ({self._reconnects} times); last error: {reason}"
                ) from None
            publisher._log.warning("broker_connection_lost_mid_batch", reason=reason)
            return False
        finally:
            if self.channel is not None:
                self._collect(self.channel)
        return True


def _connection_errors() -> tuple[type[BaseException], ...]:
    # Link-level failures (and their aftermath on a stale channel): reconnect.
    return (
        pika.exceptions.AMQPConnectionError,
        pika.exceptions.ChannelWrongStateError,
        pika.exceptions.ChannelClosedByClient,
        ConnectionError,
    )
