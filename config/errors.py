"""The one error tree of the project.

Library errors (pika, aiohttp, pydantic, PyYAML) are wrapped where they are
raised, so callers only ever need to catch these.  Expected HTTP outcomes of a
delivery are *values* (``worker.delivery.DeliveryResult``), not exceptions.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(WebhookError):
    """The settings or the subscriber file are invalid; the message says where and why."""


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
