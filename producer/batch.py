"""One ``Publisher.publish_many`` call: events pipelined on a confirm channel, in order.

Up to ``window`` events are on the wire at once.  On the first failure no
further event is sent, the confirms of those in flight are awaited, and the
failure is raised naming which event of the batch it was.  After a lost
connection every unconfirmed event is sent again on a new one (same ids, so
delivery stays at-least-once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import pika.exceptions

from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, PayloadError, PublishError, UnroutableError
from producer import metrics
from producer.channel import LINK_ERRORS, ConfirmChannel
from producer.outgoing import Outgoing, closed_by_broker_error, prepare

# Events of one publish_many on the wire at once, waiting for their confirms.
DEFAULT_WINDOW = 512
# Events of a list written to the socket together.
_BURST = 32

# (account, event type, data) or (account, event type, data, event id).
Event = tuple[str, str, dict[str, Any]] | tuple[str, str, dict[str, Any], str]


class ChannelSource(Protocol):
    """What a batch needs from its publisher: the whole interface between the two."""

    @property
    def broker(self) -> BrokerUrl:
        """The broker, for error messages."""
        ...

    @property
    def connect_attempts(self) -> int:
        """How many lost connections one batch rides out before giving up."""
        ...

    def open_confirm_channel(self) -> ConfirmChannel:
        """A confirm channel on a live connection, (re)connecting with the retry policy.

        Raises BrokerUnavailableError when the retries are used up.
        """
        ...

    def connection_lost(self, exc: BaseException) -> str:
        """Drop the connection ``exc`` came from; return why it broke, passwords masked."""
        ...


class BatchRun:
    """The state of one batch: ids, unconfirmed events, the first failure."""

    def __init__(self, source: ChannelSource, window: int, log: Any) -> None:
        self._source = source
        self._window = window
        self._log = log
        self.ids: list[str] = []
        self._unconfirmed: dict[int, Outgoing] = {}
        self._failure: tuple[int, BaseException] | None = None
        self._channel: ConfirmChannel | None = None
        self._reconnects = 0

    def run(self, events: Iterable[Event]) -> list[str]:
        """Publish ``events`` in order; return their ids once all are confirmed.

        Raises what ``Publisher.publish`` would for the first event that fails.
        """
        # Events already in a list are all ready: write them in bursts. Items of a
        # generator may come slowly, so each is sent before asking for the next.
        burst = _BURST if isinstance(events, Sequence) else 1
        try:
            for count, item in enumerate(events, 1):
                account, event_type, data = item[0], item[1], item[2]
                given_id = item[3] if len(item) > 3 else None
                try:
                    outgoing = prepare(account, event_type, data, given_id)
                except PayloadError as exc:
                    metrics.count_event(event_type, "invalid")
                    self._fail(len(self.ids), exc)
                    break
                self._send(outgoing, flush=count % burst == 0)
                if self._failure is not None:
                    break
            self._finish()
        except BrokerUnavailableError:
            # Whether the broker stored the unconfirmed events is unknown: not published.
            self._count_unsettled("unavailable")
            raise
        finally:
            self._unconfirmed.clear()
        return self.ids

    def _fail(self, index: int, error: BaseException) -> None:
        if self._failure is None or index < self._failure[0]:
            self._failure = (index, error)

    def _send(self, outgoing: Outgoing, *, flush: bool) -> None:
        """Put one event on the wire (``flush=False``: leave it buffered for now)."""
        index = len(self.ids)
        self.ids.append(outgoing.event_id)
        self._unconfirmed[index] = outgoing
        window = self._window

        def publish(channel: ConfirmChannel) -> None:
            channel.publish(index, outgoing)
            # Keep at most ``window`` events waiting for their confirm.
            if flush or channel.in_flight >= window:
                channel.wait_until(lambda: channel.in_flight < window)

        # After a reconnect the resend already includes this event.
        self._io(publish, skip_after_resend=True)

    def _finish(self) -> None:
        """Wait for every outstanding confirm; raise the first failure, if any."""
        self._io(lambda channel: channel.wait_until(lambda: not channel.in_flight))
        if self._failure is not None:
            index, error = self._failure
            if isinstance(error, PublishError) and not isinstance(error, BrokerUnavailableError):
                error.args = (
                    f"{error.args[0]} (event {index + 1} of the batch; the {index} before it "
                    "are published)",
                )
            raise error

    def _collect(self, channel: ConfirmChannel) -> None:
        for (index, _), error in channel.take_settled():
            outgoing = self._unconfirmed.pop(index, None)
            if outgoing is None:  # given up on already, and counted then
                continue
            outcome = "published" if error is None else metrics.outcome_of(error)
            metrics.count_event(outgoing.event_type, outcome)
            if error is None:
                continue
            problem = "unroutable" if isinstance(error, UnroutableError) else "nacked"
            self._log.warning(f"event_{problem}", event_id=outgoing.event_id)
            self._fail(index, error)

    def _io(
        self, operation: Callable[[ConfirmChannel], None], *, skip_after_resend: bool = False
    ) -> None:
        """Run ``operation`` on the batch channel; after a lost link, reconnect and resend."""
        while True:
            if self._channel is None:
                self._channel = self._source.open_confirm_channel()
                # A new channel knows nothing of the old one's messages: send every
                # unconfirmed event again (same ids, so this stays at-least-once).
                if not self._attempt(self._resend):
                    continue
                if skip_after_resend:
                    return
            if self._attempt(operation):
                return

    def _count_unsettled(self, outcome: str) -> None:
        for outgoing in self._unconfirmed.values():
            metrics.count_event(outgoing.event_type, outcome)

    def _resend(self, channel: ConfirmChannel) -> None:
        for index in sorted(self._unconfirmed):
            channel.publish(index, self._unconfirmed[index])

    def _attempt(self, operation: Callable[[ConfirmChannel], None]) -> bool:
        channel = self._channel
        assert channel is not None
        try:
            operation(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            # The publisher opens a new channel next time: this one is closed.
            self._channel = None
            first = min(self._unconfirmed, default=len(self.ids) - 1)
            event_type = self._unconfirmed[first].event_type if self._unconfirmed else ""
            error = closed_by_broker_error(exc, event_type)
            self._count_unsettled(metrics.outcome_of(error))
            self._unconfirmed.clear()
            self._fail(first, error)
            raise error from None
        except LINK_ERRORS as exc:
            reason = self._source.connection_lost(exc)
            self._channel = None
            self._reconnects += 1
            if self._reconnects > self._source.connect_attempts:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {self._source.broker.redacted} kept dropping the connection "
                    f"during a batch ({self._reconnects} times); last error: {reason}"
                ) from None
            self._log.warning("broker_connection_lost_mid_batch", reason=reason)
            return False
        finally:
            if self._channel is not None:
                self._collect(self._channel)
        return True
