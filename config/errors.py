"""The one error tree of the project.

Library errors (pika, aiohttp, pydantic, PyYAML) are wrapped where they are
raised, so callers only ever need to catch these.  Expected HTTP outcomes of a
delivery are *values* (``worker.delivery.DeliveryResult``), not exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence


class WebhookError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(WebhookError):
    """The settings or the subscriber file are invalid; the message says where and why."""


class NotFoundError(WebhookError):
    """Something named explicitly does not exist (a queue, an event id, an account's
    endpoint: another account's endpoint is reported the same way); nothing was done."""


class PayloadError(WebhookError):
    """An event cannot be carried on the wire (not a JSON object, NaN, bad order payload...)."""


class SignatureError(WebhookError):
    """A webhook signature header is malformed, stale, or does not match."""


class BrokerError(WebhookError):
    """Base class of RabbitMQ failures."""


class BrokerUnavailableError(BrokerError):
    """The broker could not be reached (after retries) or the connection was lost."""


class PublishError(BrokerError):
    """A publish was not confirmed by the broker."""


class UnroutableError(PublishError):
    """The broker returned a ``mandatory`` message: no queue is bound for its routing key."""


class NackedError(PublishError):
    """The broker refused (nacked) a message, e.g. a queue rejecting publishes."""


class TopologyError(BrokerError):
    """Declaring exchanges, queues or bindings failed (e.g. conflicting queue arguments)."""


class PoisonMessageError(WebhookError):
    """A queued message the worker cannot understand; it goes to a dead-letter queue."""


class DeliveryTransportError(WebhookError):
    """An HTTP attempt failed below HTTP: no connection, or no readable answer.

    The delivery code turns these into ``DeliveryResult`` values; they never
    escape it.
    """


class ForbiddenAddressError(DeliveryTransportError):
    """The target resolves only to loopback, private, link-local or other non-public addresses."""


class ConnectError(DeliveryTransportError):
    """Resolving, connecting or the TLS handshake failed."""


class ConnectionClosedError(DeliveryTransportError):
    """The connection ended before a complete answer arrived."""


class InvalidResponseError(DeliveryTransportError):
    """The server's answer is not valid HTTP/1.x, or its head is over a size limit."""


class StoreError(WebhookError):
    """The endpoint store failed: a database error, or a secret it cannot decrypt."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or does not answer (the API answers 503)."""


class ConflictError(StoreError):
    """A write clashes with what is stored, e.g. a duplicate id (409)."""


class InvalidInputError(StoreError):
    """Endpoint input breaks the subscriber rules; the message names each field (422).

    ``fields`` lists those field names (dotted for nested ones) when known.
    """

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)
