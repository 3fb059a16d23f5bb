"""Small synchronous broker helpers for tests (pika BlockingConnection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel


@contextmanager
def channel(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def depth(url: str, queue: str) -> int:
    """Exact ready-message count (passive declare; list_queues lags for quorum queues)."""
    with channel(url) as ch:
        return int(ch.queue_declare(queue, passive=True).method.message_count)


def publish_raw(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: pika.BasicProperties | None = None,
) -> None:
    """Publish with confirms, as a producer in any language might."""
    with channel(url) as ch:
        ch.confirm_delivery()
        ch.basic_publish(
            exchange,
            routing_key,
            body,
            properties or pika.BasicProperties(delivery_mode=2),
            mandatory=True,
        )


@dataclass(frozen=True)
class Got:
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


def drain(url: str, queue: str) -> list[Got]:
    """Take (and ack) every message currently in ``queue``."""
    result = []
    with channel(url) as ch:
        while True:
            method, properties, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                return result
            result.append(Got(properties, body))
            ch.basic_ack(method.delivery_tag)
