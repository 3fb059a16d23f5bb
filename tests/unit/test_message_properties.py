"""MessageProperties: pika's properties read once into plain attributes."""

from __future__ import annotations

import pika

from broker.properties import MessageProperties


def test_every_pika_property_is_carried_over() -> None:
    source = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"x-webhook-attempt": 2},
        delivery_mode=2,
        priority=1,
        correlation_id="c",
        reply_to="r",
        expiration="1000",
        message_id="evt_1",
        timestamp=1_706_698_200,
        type="order.created",
        user_id="guest",
        app_id="shop",
        cluster_id="k",
    )
    record = MessageProperties.from_pika(source)
    for name, value in vars(source).items():
        assert getattr(record, name) == value, name
    assert record.header("x-webhook-attempt") == 2
    assert record.header("absent") is None


def test_missing_or_odd_headers_become_an_empty_table() -> None:
    assert MessageProperties.from_pika(pika.BasicProperties()).headers == {}
    assert MessageProperties.from_pika(None).headers == {}
    assert MessageProperties(headers=None).headers == {}  # type: ignore[arg-type]
    assert MessageProperties(headers=["not", "a", "table"]).headers == {}  # type: ignore[arg-type]


def test_present_lists_what_the_message_has_without_headers() -> None:
    record = MessageProperties(message_id="evt_1", delivery_mode=2, headers={"a": 1})
    assert record.present() == {"message_id": "evt_1", "delivery_mode": 2}
