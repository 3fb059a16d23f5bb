"""Property tests: whatever bytes and headers arrive, the worker gets an event or a poison reason.

Anything else (an unexpected exception, a header value the HTTP client refuses)
would leave a message unsettled, so it is looked for with arbitrary input.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pika
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.properties import MessageProperties
from config.errors import PoisonMessageError
from config.subscribers import Subscriber
from wire import contract
from wire.queued_event import QueuedEvent, read_event
from worker.delivery import Deliverer

SUBSCRIBER = Subscriber.model_validate(
    {"id": "p", "account": "acme", "url": "https://p.example/h", "secret": "s", "events": ["#"]}
)

header_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {"event": st.one_of(st.text(), json_values), "data": json_values},
    optional={"timestamp": st.one_of(st.text(), json_values)},
)


def _check(properties: Any, body: bytes) -> QueuedEvent | None:
    try:
        event = read_event(MessageProperties.from_pika(properties), body, max_attempts=3)
    except PoisonMessageError as exc:
        assert str(exc)  # always a reason for the operator
        return None
    headers = Deliverer(allow_private_networks=True).headers_for(SUBSCRIBER, event, now_ms=1)
    for name, value in headers.items():
        value.encode("utf-8")  # no lone surrogates
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value), (name, value)
    assert 1 <= event.attempt <= 3
    return event


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), attempt=header_values, message_id=st.text(max_size=40))
def test_arbitrary_bytes_and_headers(body: bytes, attempt: Any, message_id: str) -> None:
    properties = pika.BasicProperties(message_id=message_id, headers={contract.ATTEMPT: attempt})
    _check(properties, body)


@settings(max_examples=300, deadline=None)
@given(envelope=envelopes, attempt=st.integers(min_value=-5, max_value=8) | st.none())
def test_arbitrary_json_envelopes(envelope: dict[str, Any], attempt: int | None) -> None:
    body = json.dumps(envelope).encode("utf-8", "surrogatepass")
    properties = pika.BasicProperties(
        headers=None if attempt is None else {contract.ATTEMPT: attempt}
    )
    event = _check(properties, body)
    if event is not None:
        assert event.event_type == envelope["event"]
        assert event.event_id.startswith("evt_")  # derived from content when missing


def test_decimal_attempt_is_poison_not_a_crash() -> None:
    properties = pika.BasicProperties(headers={contract.ATTEMPT: Decimal("2")})
    body = b'{"event":"a","data":{},"timestamp":"t"}'
    assert _check(properties, body) is None
