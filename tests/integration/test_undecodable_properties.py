"""Messages whose properties pika cannot decode, thrown at a running worker.

Before the guarded decode, such a message made pika raise while reading the
content-header frame: the connection dropped, the message and every other one
in flight came back, about 20 times, and valid events reached the work queue's
delivery limit without an attempt.  Now it is dead-lettered as poison at its
first delivery, and nothing else is redelivered because of it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
from typing import Any

import pytest
import structlog
from aiohttp import web

from broker.async_channel import Message
from config.subscribers import Subscriber
from config.topology import EVENTS_EXCHANGE, dead_letter_queue, event_routing_key, work_queue
from tests.support import redteam_amqp
from tests.support.amqp import depth, drain
from tests.support.raw_amqp import publish_raw_properties
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import (
    ACCOUNT,
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
)
from wire import contract
from worker.processor import MessageProcessor

BODY = b'{"event":"order.created","data":{"id":"x"},"timestamp":"2026-01-31T10:30:01.234Z"}'

# The fixtures RabbitMQ passes on (it refuses NaN, infinity and unknown field
# types itself), and the reason each one is dead-lettered with.
UNDECODABLE = {
    "timestamp-2pow63": "OverflowError in header 'x-sent-at'",
    "timestamp-year-10000": "ValueError in header 'x-sent-at'",
    "table-nested-5000-deep": "RecursionError in header 'x-nested'",
    "array-nested-5000-deep": "RecursionError in header 'x-nested'",
    "table-nested-100-deep": "nested over 64 levels in header 'x-nested'",
    "double-1e300": "integer over 64 bits in header 'x-amount'",
}
# Odd but decodable: delivered like any other event.
DELIVERABLE = ("header-key-not-utf8",)


async def _slow_ok(_request: Received) -> web.Response:
    # Slow enough that the events around a red-team message are still in flight
    # (unacked) when it arrives: a dropped connection would bring them back.
    await asyncio.sleep(0.3)
    return web.json_response({"received": True})


def _publish(url: str, name: str, straight_to_queue: bool) -> None:
    properties = redteam_amqp.load(name)
    if straight_to_queue:
        publish_raw_properties(url, "", work_queue("target"), properties, BODY)
    else:
        routing_key = event_routing_key(ACCOUNT, "order.created")
        publish_raw_properties(url, EVENTS_EXCHANGE, routing_key, properties, BODY)


async def test_undecodable_properties_are_poison_at_once_and_nothing_else_comes_back(
    vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, bool, Any]] = []  # (message id, redelivered, x-delivery-count)
    process = MessageProcessor.process

    async def spy(self: MessageProcessor, sub: Subscriber, message: Message, publisher: Any) -> Any:
        props = message.properties
        seen.append((props.message_id, message.redelivered, props.header("x-delivery-count")))
        return await process(self, sub, message, publisher)

    monkeypatch.setattr(MessageProcessor, "process", spy)
    receiver = await Receiver(respond=_slow_ok).start()
    settings = make_settings(vhost_url, [subscriber("target", receiver.url)], grace=1)
    valid: list[str] = []
    try:
        async with running_worker(settings, requeue_delay_seconds=0.2):
            with structlog.testing.capture_logs() as logs:
                valid += await asyncio.to_thread(publish_orders, vhost_url, 5, "before-")
                for i, name in enumerate([*UNDECODABLE, *DELIVERABLE]):
                    # Through the exchange and straight to the work queue, in turns.
                    await asyncio.to_thread(_publish, vhost_url, name, i % 2 == 1)
                    valid += await asyncio.to_thread(publish_orders, vhost_url, 2, f"{name}-")
                valid += await asyncio.to_thread(publish_orders, vhost_url, 5, "after-")
                expected = len(valid) + len(DELIVERABLE)
                await receiver.wait_for(lambda rs: len(rs) >= expected, timeout=30)
                await wait_until(
                    lambda: depth(vhost_url, dead_letter_queue("target")) == len(UNDECODABLE),
                    30,
                    "every undecodable message dead-lettered",
                )
                await asyncio.sleep(0.5)  # room for a redelivery that should not come
                assert depth(vhost_url, work_queue("target")) == 0
    finally:
        await receiver.stop()

    # Every valid event: one attempt, never redelivered, delivery count untouched.
    delivered = collections.Counter(r.event_id for r in receiver.requests)
    assert set(valid) <= set(delivered)
    assert all(delivered[event_id] == 1 for event_id in valid), delivered
    assert all(r.attempt == 1 for r in receiver.requests)
    assert set(DELIVERABLE) <= set(delivered)
    assert [s for s in seen if s[1] or s[2]] == []  # nothing came back, not even the poison
    assert len(seen) == len(valid) + len(UNDECODABLE) + len(DELIVERABLE)

    events = [e["event"] for e in logs]
    assert "broker_connection_lost" not in events
    assert "message_processing_crashed" not in events
    assert events.count("poison_message_dead_lettered") == len(UNDECODABLE)

    letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("target"))
    by_id = {letter.properties.message_id: letter for letter in letters}
    assert set(by_id) == set(UNDECODABLE)
    for name, why in UNDECODABLE.items():
        letter, raw = by_id[name], redteam_amqp.load(name)
        headers = letter.headers
        assert headers[contract.DEAD_LETTER_REASON] == (
            f"poison: message properties cannot be decoded ({why})"
        ), name
        assert headers[contract.SUBSCRIBER] == "target"
        assert headers[contract.DEAD_LETTERED_AT]
        assert headers[contract.ATTEMPTS] == 0
        assert headers[contract.RAW_PROPERTIES_SIZE] == len(raw)
        shown = base64.b64decode(headers[contract.RAW_PROPERTIES])
        assert shown == raw[: contract.RAW_PROPERTIES_CAP]
        assert headers[contract.ACCOUNT] == ACCOUNT  # what could be read is kept
        assert "x-sent-at" not in headers and "x-nested" not in headers
        assert letter.properties.type == "order.created"
        assert letter.body == BODY
