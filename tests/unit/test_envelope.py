"""The envelope: event types, timestamps, order payload validation, exact body bytes."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from config.errors import PayloadError
from wire.envelope import (
    build_envelope,
    format_timestamp,
    new_event_id,
    validate_data,
    validate_event_id,
    validate_event_type,
)
from wire.samples import SAMPLE_EVENTS, sample_data

NOW = datetime(2026, 1, 31, 10, 30, 1, 234567, tzinfo=UTC)


def order(event_type: str = "order.created") -> dict[str, Any]:
    return sample_data(event_type)


# --- timestamps and ids -------------------------------------------------------


def test_timestamp_has_milliseconds_and_z() -> None:
    assert format_timestamp(NOW) == "2026-01-31T10:30:01.234Z"


def test_timestamp_truncates_like_javascript() -> None:
    moment = datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-01-31T23:59:59.999Z"


def test_timestamp_whole_second_keeps_three_digits() -> None:
    assert format_timestamp(datetime(2026, 2, 1, tzinfo=UTC)) == "2026-02-01T00:00:00.000Z"


def test_timestamp_converts_to_utc() -> None:
    dhaka = timezone(timedelta(hours=6))
    assert format_timestamp(datetime(2026, 2, 1, 4, 0, tzinfo=dhaka)) == (
        "2026-01-31T22:00:00.000Z"
    )


def test_timestamp_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 31, 10, 30))


def test_event_ids_are_fresh_and_header_safe() -> None:
    ids = {new_event_id() for _ in range(100)}
    assert len(ids) == 100
    for event_id in ids:
        assert re.fullmatch(r"evt_[0-9a-f]{32}", event_id)
        assert validate_event_id(event_id) == event_id


@pytest.mark.parametrize("bad", ["", "has space", "é", "x" * 256, "line\nbreak", 7])
def test_bad_event_ids(bad: object) -> None:
    with pytest.raises(PayloadError, match="event id"):
        validate_event_id(bad)


# --- event types --------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type", ["order.created", "message.received", "ping", "a.b_c.d-e", "v2.order.created"]
)
def test_good_event_types(event_type: str) -> None:
    assert validate_event_type(event_type) == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        "",
        "Order.created",
        "order.*",
        "order.#",
        "#",
        "order..created",
        ".order",
        "order.",
        "order created",
        "order/created",
        "ordér.created",
        "order.created-",
    ],
)
def test_bad_event_types(event_type: str) -> None:
    with pytest.raises(PayloadError, match="event type"):
        validate_event_type(event_type)


def test_event_type_length_limit_is_255_bytes() -> None:
    longest = ".".join(["a" * 63] * 4)  # 255 characters
    assert validate_event_type(longest) == longest
    with pytest.raises(PayloadError, match="255 bytes"):
        validate_event_type(longest + "a")


def test_event_type_must_be_a_string() -> None:
    with pytest.raises(PayloadError, match="must be a string"):
        validate_event_type(None)


# --- the body -----------------------------------------------------------------


def test_body_is_event_data_timestamp_in_that_order() -> None:
    data = order()
    body = build_envelope("order.created", data, now=NOW)
    parsed = json.loads(body)
    assert list(parsed) == ["event", "data", "timestamp"]
    assert parsed["event"] == "order.created"
    assert parsed["data"] == data
    assert parsed["timestamp"] == "2026-01-31T10:30:01.234Z"
    assert body.startswith(b'{"event":"order.created","data":{"id":"')


@pytest.mark.parametrize("event_type", SAMPLE_EVENTS)
def test_page_examples_pass_validation(event_type: str) -> None:
    data = order(event_type)
    assert validate_data(event_type, data) is data


def test_data_key_order_and_content_unchanged() -> None:
    data = order()
    # Reverse the key order: the body must follow the caller's dict, not the model.
    data = dict(reversed(list(data.items())))
    data["items"][0] = dict(reversed(list(data["items"][0].items())))
    before = copy.deepcopy(data)
    body = build_envelope("order.created", data, now=NOW)
    assert data == before
    sent = json.loads(body)["data"]
    assert list(sent) == list(data)
    assert list(sent["items"][0]) == list(data["items"][0])
    # Exactly the caller's values: nothing coerced, defaulted or dropped.
    assert body == (
        b'{"event":"order.created","data":'
        + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        + b',"timestamp":"2026-01-31T10:30:01.234Z"}'
    )


def test_extra_keys_are_kept() -> None:
    data = order("order.updated")
    data["couponCode"] = "EID2026"
    data["items"][0]["variant"] = {"color": "black", "size": None}
    sent = json.loads(build_envelope("order.updated", data, now=NOW))["data"]
    assert sent["couponCode"] == "EID2026"
    assert sent["items"][0]["variant"] == {"color": "black", "size": None}


def test_non_ascii_text_passes_through() -> None:
    data = order()
    data["customerName"] = "রহিম উদ্দিন 🛍️"
    body = build_envelope("order.created", data, now=NOW)
    assert "রহিম উদ্দিন 🛍️".encode() in body


def test_integral_float_quantity_is_accepted() -> None:
    # JSON has one number type; JavaScript producers cannot tell 2 from 2.0.
    data = order()
    data["items"][1]["quantity"] = 2.0
    data["subtotal"] = 1950.0
    body = build_envelope("order.created", data, now=NOW)
    assert b'"quantity":2,' in body
    assert b'"subtotal":1950,' in body


@pytest.mark.parametrize(
    ("event_type", "mutate", "expected"),
    [
        ("order.created", lambda d: d["items"][0].update(quantity=0), "data.items[0].quantity"),
        ("order.created", lambda d: d["items"][0].update(quantity=1.5), "data.items[0].quantity"),
        ("order.created", lambda d: d["items"][1].update(quantity="2"), "data.items[1].quantity"),
        ("order.created", lambda d: d["items"][0].update(quantity=True), "data.items[0].quantity"),
        ("order.created", lambda d: d["items"][0].pop("productId"), "data.items[0].productId"),
        ("order.created", lambda d: d["items"][0].update(unitPrice=-1), "data.items[0].unitPrice"),
        ("order.created", lambda d: d["items"][0].update(unitPrice="1250"), "unitPrice"),
        ("order.created", lambda d: d.update(items=[]), "data.items"),
        ("order.created", lambda d: d.update(items={}), "data.items"),
        ("order.created", lambda d: d.update(subtotal=float("nan")), "data.subtotal"),
        ("order.created", lambda d: d.update(subtotal=float("inf")), "data.subtotal"),
        ("order.created", lambda d: d.update(id=""), "data.id"),
        ("order.created", lambda d: d.update(id=679), "data.id"),
        ("order.created", lambda d: d.pop("orderNumber"), "data.orderNumber"),
        ("order.created", lambda d: d.update(customerName=None), "data.customerName"),
        ("order.created", lambda d: d.update(createdAt="yesterday"), "data.createdAt"),
        ("order.created", lambda d: d.update(createdAt="2026-01-31T10:30:00"), "data.createdAt"),
        ("order.updated", lambda d: d.pop("previousStatus"), "data.previousStatus"),
        ("order.updated", lambda d: d.pop("updatedAt"), "data.updatedAt"),
        ("order.cancelled", lambda d: d.update(status="shipped"), "data.status"),
        ("order.cancelled", lambda d: d.pop("updatedAt"), "data.updatedAt"),
    ],
)
def test_order_validation_names_the_field(event_type: str, mutate: Any, expected: str) -> None:
    data = order(event_type)
    mutate(data)
    with pytest.raises(PayloadError) as caught:
        build_envelope(event_type, data, now=NOW)
    message = str(caught.value)
    assert message.startswith(f"{event_type} data")
    assert expected in message


def test_validation_error_lists_every_problem_without_values() -> None:
    data = order()
    data["customerPhone"] = 8801712345678
    data["items"][0]["quantity"] = -3
    with pytest.raises(PayloadError) as caught:
        build_envelope("order.created", data, now=NOW)
    message = str(caught.value)
    assert "order.created data.customerPhone:" in message
    assert "order.created data.items[0].quantity:" in message
    # Customer data stays out of error messages (they end up in logs).
    assert "8801712345678" not in message


def test_order_created_does_not_need_update_fields() -> None:
    data = order()
    assert "previousStatus" not in data
    build_envelope("order.created", data, now=NOW)


def test_other_events_take_any_json_object() -> None:
    data = {"z": 1, "a": [1, 2.5, "x", None, True], "nested": {"deep": {"er": []}}}
    body = build_envelope("message.received", data, now=NOW)
    assert body == (
        b'{"event":"message.received","data":{"z":1,"a":[1,2.5,"x",null,true],'
        b'"nested":{"deep":{"er":[]}}},"timestamp":"2026-01-31T10:30:01.234Z"}'
    )
    assert build_envelope("x.y", {}, now=NOW).startswith(b'{"event":"x.y","data":{},')


@pytest.mark.parametrize("data", [[], "text", 1, None, ("a", 1)])
def test_data_must_be_an_object(data: Any) -> None:
    with pytest.raises(PayloadError, match="must be a JSON object"):
        build_envelope("message.received", data, now=NOW)


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(PayloadError, match="keys must be strings"):
        build_envelope("message.received", {1: "one"}, now=NOW)  # type: ignore[dict-item]


def test_values_json_cannot_carry_are_refused() -> None:
    with pytest.raises(PayloadError):
        build_envelope("message.received", {"x": float("nan")}, now=NOW)
    with pytest.raises(PayloadError):
        build_envelope("message.received", {"x": object()}, now=NOW)


def test_default_timestamp_is_now() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    stamp = json.loads(build_envelope("a.b", {}))["timestamp"]
    moment = datetime.fromisoformat(stamp)
    assert before <= moment <= datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)


# --- samples ------------------------------------------------------------------


@pytest.mark.parametrize("event_type", SAMPLE_EVENTS)
def test_samples_get_fresh_order_ids(event_type: str) -> None:
    first, second = sample_data(event_type), sample_data(event_type)
    assert first["id"] != second["id"]
    assert re.fullmatch(r"[0-9a-f]{24}", first["id"])
    assert re.fullmatch(r"ORD-20260131-[0-9A-F]{4}", first["orderNumber"])
    # Everything else is the page's example, in the page's order.
    del first["id"], first["orderNumber"], second["id"], second["orderNumber"]
    assert first == second
    first["items"].clear()
    assert sample_data(event_type)["items"], "samples must not share mutable state"


def test_sample_matches_page_example() -> None:
    data = sample_data("order.cancelled")
    assert list(data) == [
        "id",
        "orderNumber",
        "customerName",
        "customerPhone",
        "shippingAddress",
        "items",
        "subtotal",
        "status",
        "previousStatus",
        "sourceType",
        "sourceName",
        "createdAt",
        "updatedAt",
    ]
    assert data["items"] == [
        {
            "productId": "678a1b2c3d4e5f6a7b8c9d0e",
            "productName": "Wireless Bluetooth Headphones",
            "quantity": 1,
            "unitPrice": 1250,
        }
    ]
    assert data["updatedAt"] == "2026-02-01T09:45:12.000Z"


def test_unknown_sample() -> None:
    with pytest.raises(PayloadError, match=r"no sample for event 'message\.received'"):
        sample_data("message.received")
