"""Pure parts of the worker: retry decisions, address policy, message parsing, headers."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook

from broker.properties import MessageProperties
from config.errors import PoisonMessageError
from config.subscribers import RetryPolicy, Subscriber
from wire import contract
from wire.queued_event import MAX_BODY_BYTES, read_event
from wire.signature import verify
from worker.address_policy import is_public_address
from worker.delivery import Deliverer, DeliveryResult
from worker.retry import DeadLetter, Retry, next_attempt

BODY = b'{"event":"order.created","data":{"id":"1"},"timestamp":"2026-01-31T10:30:01.234Z"}'


def _result(status: int = 500, retry_after: float | None = None) -> DeliveryResult:
    return DeliveryResult("http_error", status, 0.01, f"HTTP {status}", b"", retry_after)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, Retry(2, 30)), (2, Retry(3, 300)), (3, DeadLetter("exhausted"))],
)
def test_next_attempt_walks_the_delays_then_dead_letters(attempt: int, expected: object) -> None:
    assert next_attempt(attempt, _result(), RetryPolicy(delays_seconds=(30, 300))) == expected


def test_no_delays_means_one_attempt() -> None:
    assert next_attempt(1, _result(), RetryPolicy(delays_seconds=())) == DeadLetter("exhausted")


def test_retry_after_picks_a_long_enough_delay_queue() -> None:
    policy = RetryPolicy(delays_seconds=(30, 300))
    assert next_attempt(1, _result(429, 120), policy) == Retry(2, 300)
    assert next_attempt(1, _result(503, 10), policy) == Retry(2, 30)  # shorter: keep ours
    assert next_attempt(1, _result(429, 3600), policy) == DeadLetter("retry_after_too_long")
    # Retry-After on other statuses is not a back-off request.
    assert next_attempt(1, _result(500, 3600), policy) == Retry(2, 30)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fd00:ec2::254", False),  # AWS IPv6 metadata (unique local)
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("224.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_public_address_policy(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_read_event_defaults_and_canonical_body() -> None:
    pretty = json.dumps(json.loads(BODY), indent=2).encode()
    event = read_event(
        MessageProperties(message_id="evt_1"),
        pretty,
        max_attempts=3,
    )
    assert event.event_id == "evt_1"
    assert event.event_type == "order.created"
    assert event.attempt == 1
    assert event.body == BODY  # re-serialised into the verifier's form
    assert event.occurred_at is not None


def test_read_event_without_message_id_gets_a_stable_one() -> None:
    first = read_event(MessageProperties(), BODY, max_attempts=3)
    again = read_event(
        MessageProperties(headers={contract.ATTEMPT: 2}),
        BODY,
        max_attempts=3,
    )
    assert first.event_id == again.event_id and first.event_id.startswith("evt_")
    assert again.attempt == 2


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"{", None, "not valid JSON"),
        (b'{"event": "x", "data": {}, "timestamp": NaN}', None, "not valid JSON"),
        (b'"just a string"', None, "not a JSON object"),
        (b'{"event": 5, "data": {}, "timestamp": "t"}', None, "no 'event'"),
        (b'{"event": "a.b", "data": [], "timestamp": "t"}', None, "no 'data'"),
        (b'{"event": "a.b", "data": {}}', None, "no 'timestamp'"),
        (BODY, {contract.ATTEMPT: "2"}, "not an integer"),
        (BODY, {contract.ATTEMPT: 0}, "outside 1-3"),
        (BODY, {contract.ATTEMPT: 4}, "outside 1-3"),
        (b" " * (MAX_BODY_BYTES + 1), None, "over the"),
    ],
)
def test_poison_messages_are_named(
    body: bytes, headers: dict[str, object] | None, reason: str
) -> None:
    with pytest.raises(PoisonMessageError, match=reason):
        read_event(MessageProperties(headers=headers), body, max_attempts=3)


def _subscriber(**extra: object) -> Subscriber:
    return Subscriber.model_validate(
        {
            "id": "s",
            "account": "acme",
            "url": "https://shop.example/hook",
            "secret": "s3cret-value",
            "events": ["order.*"],
            **extra,
        }
    )


def test_headers_follow_the_wire_contract() -> None:
    event = read_event(MessageProperties(message_id="evt_9"), BODY, max_attempts=3)
    now = int(time.time() * 1000)
    headers = Deliverer(allow_private_networks=False).headers_for(_subscriber(), event, now_ms=now)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Webhook-Event"] == "order.created"
    assert headers["X-Webhook-Attempt"] == "1"
    assert headers["X-Webhook-Id"] == "evt_9"
    assert headers["X-Webhook-Signature"].startswith(f"t={now},v1=")
    assert verify("s3cret-value", BODY, headers["X-Webhook-Signature"]) == now
    assert "webhook-signature" not in headers


def test_standard_webhooks_headers_verify_with_the_reference_library() -> None:
    event = read_event(
        MessageProperties(message_id="evt_std"),
        BODY,
        max_attempts=3,
    )
    headers = Deliverer(allow_private_networks=False).headers_for(
        _subscriber(standard_webhooks=True), event, now_ms=int(time.time() * 1000)
    )
    assert headers["webhook-id"] == "evt_std"
    payload = Webhook(b"s3cret-value").verify(BODY, headers)
    assert payload == json.loads(BODY)
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(b"another-secret").verify(BODY, headers)


def test_standard_webhooks_whsec_secret_is_base64_key_material() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    event = read_event(MessageProperties(message_id="evt_w"), BODY, max_attempts=3)
    headers = Deliverer(allow_private_networks=False).headers_for(
        _subscriber(secret=secret, standard_webhooks=True), event, now_ms=int(time.time() * 1000)
    )
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 25 Nov 2026 00:02:00 GMT", 120.0),
        ("Wed, 25 Nov 2026 00:00:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    value: str | None, expected: float | None
) -> None:
    from datetime import UTC, datetime

    from worker.delivery import retry_after_seconds

    now = datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(value, now=now) == expected


def test_during_a_rotation_both_secrets_sign_every_delivery() -> None:
    event = read_event(MessageProperties(message_id="evt_rot"), BODY, max_attempts=3)
    rotating = _subscriber(previous_secret="old-s3cret", standard_webhooks=True)
    now = int(time.time() * 1000)
    headers = Deliverer(allow_private_networks=False).headers_for(rotating, event, now_ms=now)
    assert headers["X-Webhook-Signature"].count("v1=") == 2
    assert verify("s3cret-value", BODY, headers["X-Webhook-Signature"]) == now
    assert verify("old-s3cret", BODY, headers["X-Webhook-Signature"]) == now
    # Standard Webhooks: space-separated signatures; the reference library takes either.
    assert Webhook(b"s3cret-value").verify(BODY, headers) == json.loads(BODY)
    assert Webhook(b"old-s3cret").verify(BODY, headers) == json.loads(BODY)
    assert "old-s3cret" not in repr(rotating)
