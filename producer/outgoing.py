"""An event ready for the wire, and the errors that say why the broker did not take it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions

from config.errors import NackedError, PublishError, UnroutableError
from config.topology import EVENTS_EXCHANGE, event_routing_key
from wire import contract
from wire.envelope import build_envelope, new_event_id, validate_account, validate_event_id

# The reply code of a channel closed for publishing to an exchange that is not there.
_NOT_FOUND = 404


@dataclass(frozen=True)
class Outgoing:
    """One validated event: its envelope and AMQP properties, published to ``webhooks.events``."""

    account: str
    event_type: str
    event_id: str
    body: bytes
    properties: pika.BasicProperties

    @property
    def routing_key(self) -> str:
        """``<account>.<event type>``: only that account's endpoints are bound to it."""
        return event_routing_key(self.account, self.event_type)


def prepare(account: str, event_type: str, data: dict[str, Any], event_id: str | None) -> Outgoing:
    """Validate one event and build its envelope; raises PayloadError."""
    account = validate_account(account)
    event_id = new_event_id() if event_id is None else validate_event_id(event_id)
    now = datetime.now(UTC)
    body = build_envelope(event_type, data, now=now)
    properties = pika.BasicProperties(
        content_type=contract.CONTENT_TYPE,
        delivery_mode=contract.PERSISTENT,
        message_id=event_id,
        type=event_type,
        timestamp=int(now.timestamp()),
        # The account travels beside the body, never in it: receivers see exactly
        # the page's envelope.
        headers={contract.ACCOUNT: account},
    )
    return Outgoing(account, event_type, event_id, body, properties)


def unroutable_error(routing_key: str) -> UnroutableError:
    """The broker returned an event with ``routing_key``: no queue is bound for it."""
    account, _, event_type = routing_key.partition(".")
    return UnroutableError(
        f"no endpoint of account {account!r} receives {event_type!r} (routing key "
        f"{routing_key!r} on exchange {EVENTS_EXCHANGE!r}): check the account's endpoints "
        "and their event patterns (and that the topology has been declared)"
    )


def nacked_error(event_id: str, event_type: str) -> NackedError:
    """The broker nacked an event."""
    return NackedError(
        f"RabbitMQ refused event {event_id} ({event_type!r}); a subscriber "
        "queue may be full or unavailable"
    )


def closed_by_broker_error(
    exc: pika.exceptions.ChannelClosedByBroker, event_type: str
) -> PublishError:
    """The broker closed the channel while an event of ``event_type`` was being published."""
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
