"""Attempt records: built by the worker with secrets masked, and batches on the wire."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.url import BrokerUrl
from config.errors import PayloadError
from config.subscribers import Subscriber
from wire.attempt_record import (
    EXCERPT_BYTES,
    AttemptRecord,
    decode_batch,
    encode_batch,
    encode_wire_batch,
    from_wire,
)
from wire.queued_event import QueuedEvent
from worker import metrics
from worker.attempt_capture import capture as capture_wire
from worker.attempt_capture import mask, secret_forms
from worker.attempt_log import AttemptLog
from worker.delivery import DeliveryResult
from worker.retry import DeadLetter, Retry

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "previous-secret-value-123"


def _subscriber() -> Subscriber:
    return Subscriber.model_validate(
        {
            "id": "shop",
            "account": "acme",
            "url": "https://shop.example/hooks",
            "secret": SECRET,
            "previous_secret": OLD_SECRET,
            "events": ["order.*"],
        }
    )


def _event(attempt: int = 1) -> QueuedEvent:
    return QueuedEvent("evt_1", "order.created", attempt, b'{"id":"o1"}', None, None, "acme")


def _result(excerpt: bytes, **extra: object) -> DeliveryResult:
    fields: dict[str, object] = {
        "outcome": "http_error",
        "status": 500,
        "duration_seconds": 0.25,
        "error": "HTTP 500",
        "response_excerpt": excerpt,
    }
    fields.update(extra)
    return DeliveryResult(**fields)  # type: ignore[arg-type]


def capture(*args: Any, **kwargs: Any) -> AttemptRecord:
    """The worker's record (built in its wire form), as the recorder reads it: validated."""
    return from_wire(capture_wire(*args, **kwargs))


def test_every_form_of_every_secret_is_masked_in_the_excerpt() -> None:
    key = SECRET.removeprefix("whsec_")
    answer = f"got {SECRET}; key {key}; bare {key.rstrip('=')}; old {OLD_SECRET}".encode()
    record = capture(_subscriber(), _event(), _result(answer), Retry(2, 30), ended_at=1000.0)
    assert b"kkkk" not in record.response_excerpt  # base64 of b"kkk" is "a2tr"
    for secret in (SECRET, key, key.rstrip("="), OLD_SECRET):
        assert secret.encode() not in record.response_excerpt
    assert record.response_excerpt.count(b"***") == 4


def test_a_secret_cut_by_the_end_of_the_excerpt_is_masked() -> None:
    excerpt = (b"x" * (EXCERPT_BYTES - 10) + SECRET.encode())[:EXCERPT_BYTES]
    masked = mask(excerpt, secret_forms((SECRET,)))
    assert masked.endswith(b"x***") and SECRET[:10].encode() not in masked
    # Ordinary endings stay as they are.
    assert mask(b"all good", secret_forms((SECRET,))) == b"all good"


def slow_mask(data: bytes, forms: tuple[bytes, ...]) -> bytes:
    """The masking rule spelled out: every form replaced, then a cut-off form at the end."""
    for form in forms:
        data = data.replace(form, b"***")
    for form in forms:
        for size in range(len(form) - 1, 3, -1):
            if data.endswith(form[:size]):
                return data[:-size] + b"***"
    return data


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from(secret_forms((SECRET, OLD_SECRET))),
            st.builds(
                lambda form, cut: form[:cut],
                st.sampled_from(secret_forms((SECRET, OLD_SECRET))),
                st.integers(1, 60),
            ),
        ),
        max_size=6,
    )
)
def test_masking_finds_every_whole_or_cut_off_secret(pieces: list[bytes]) -> None:
    """The quick check (a form's first characters absent: nothing to do) changes no result."""
    forms = secret_forms((SECRET, OLD_SECRET))
    data = b"".join(pieces)
    assert mask(data, forms) == slow_mask(data, forms)


def test_secrets_echoed_in_headers_and_errors_are_masked() -> None:
    result = _result(
        b"ok",
        error=f"HTTP 500: {OLD_SECRET}",
        response_headers=(("server", f"x {SECRET}"), ("x-request-id", SECRET[:20])),
    )
    record = capture(_subscriber(), _event(), result, Retry(2, 30), ended_at=1.0)
    assert record.error == "HTTP 500: ***"
    assert record.response_headers == {"server": "x ***", "x-request-id": "***"}


def test_the_record_says_what_happened_and_what_came_next() -> None:
    result = _result(
        b"nope",
        response_headers=(("content-type", "text/plain"), ("set-cookie", "s=1")),
    )
    retried = capture(_subscriber(), _event(), result, Retry(2, 30), ended_at=1000.0)
    assert (retried.disposition, retried.next_attempt, retried.dead_letter_reason) == (
        "retry",
        2,
        None,
    )
    assert retried.response_headers == {"content-type": "text/plain"}
    assert retried.started_at == datetime.fromtimestamp(999.75, UTC)
    assert retried.body == b'{"id":"o1"}'  # first attempt: carries the body
    dead = capture(_subscriber(), _event(3), result, DeadLetter("exhausted"), ended_at=1000.0)
    assert (dead.disposition, dead.dead_letter_reason, dead.body) == (
        "dead_lettered",
        "exhausted",
        None,
    )
    ok = capture(_subscriber(), _event(), DeliveryResult("success", 200, 0.01), None, ended_at=5.0)
    assert (ok.disposition, ok.status, ok.error) == ("delivered", 200, None)
    failed = capture(
        _subscriber(),
        _event(),
        DeliveryResult("timeout", 0, 5.0, "timed out after 5 s"),
        Retry(2, 30),
    )
    assert failed.status is None and failed.outcome == "timeout"


def test_batches_round_trip_and_are_validated() -> None:
    wire = capture_wire(
        _subscriber(),
        _event(),
        _result(b"\xff\x00binary", response_headers=(("retry-after", "30"),)),
        Retry(2, 30),
        ended_at=1700000000.123456,
    )
    [back] = decode_batch(encode_wire_batch([wire]))
    record = from_wire(wire)
    assert back == AttemptRecord.model_validate(record.model_dump())
    assert back.started_at == record.started_at and back.body == record.body
    assert back.response_excerpt == b"\xff\x00binary"
    assert back.ended_at == datetime.fromtimestamp(1700000000.123456, UTC)
    # A model encoded by the recorder's side reads back the same.
    [again] = decode_batch(encode_batch([record]))
    assert again == back


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (orjson.dumps({"v": 2, "records": []}), "version"),
        (orjson.dumps({"v": 1}), "no list"),
        (orjson.dumps({"v": 1, "records": [{"event_id": "x"}]}), "record 0"),
    ],
)
def test_an_invalid_batch_is_one_clear_error(data: bytes, problem: str) -> None:
    with pytest.raises(PayloadError, match=problem):
        decode_batch(data)


def test_an_oversized_or_foreign_field_is_refused() -> None:
    record = capture(_subscriber(), _event(), _result(b"x"), Retry(2, 30), ended_at=10.0)
    plain = orjson.loads(encode_batch([record]))
    plain["records"][0]["response_headers"] = {"set-cookie": "a"}
    with pytest.raises(PayloadError, match="response_headers"):
        decode_batch(orjson.dumps(plain))
    plain["records"][0]["response_headers"] = {}
    plain["records"][0]["response_excerpt"] = base64.b64encode(b"x" * (EXCERPT_BYTES + 1)).decode()
    with pytest.raises(PayloadError, match="response_excerpt"):
        decode_batch(orjson.dumps(plain))


async def test_without_a_broker_records_are_buffered_within_the_bound_and_counted() -> None:
    """record() never waits: with no broker the oldest records beyond the bound are dropped."""
    dropped = metrics.DELIVERY_LOG_DROPPED.labels("buffer_full")
    shutdown = metrics.DELIVERY_LOG_DROPPED.labels("shutdown")
    before, before_shutdown = dropped._value.get(), shutdown._value.get()
    attempt_log = AttemptLog(
        BrokerUrl.parse("amqp://guest:guest@127.0.0.1:1/%2F"), max_records=100, retry_seconds=0.05
    )
    attempt_log.start()
    record = capture_wire(_subscriber(), _event(), _result(b"x"), Retry(2, 30), ended_at=10.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(1000):
        attempt_log.record(record)
    assert loop.time() - started < 0.5
    assert attempt_log.buffered == 100
    assert dropped._value.get() - before == 900
    await asyncio.sleep(0.2)  # connection attempts fail meanwhile
    await attempt_log.close(0.2)
    assert shutdown._value.get() - before_shutdown == 100
    assert attempt_log.buffered == 0
