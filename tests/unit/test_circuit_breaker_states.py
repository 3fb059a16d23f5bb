"""The circuit breaker's state machine on a fake clock, and its subscriber-file settings."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.subscriber_file import parse_subscriber_file
from config.subscribers import CircuitBreakerPolicy
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.delivery import DeliveryResult
from worker.retry import DeadLetter, next_attempt

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(**policy: object) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    fields: dict[str, object] = {
        "failure_threshold": 3,
        "cooldown_seconds": 5,
        "max_cooldown_seconds": 30,
    }
    fields.update(policy)
    return CircuitBreaker(CircuitBreakerPolicy.model_validate(fields), clock), clock


def _fail(breaker: CircuitBreaker, times: int = 1) -> list[CircuitState | None]:
    return [breaker.record(breaker.ticket(), ok=False) for _ in range(times)]


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker, _ = _breaker()
    assert _fail(breaker, 2) == [None, None]
    assert breaker.record(breaker.ticket(), ok=True) is None  # a success resets the count
    assert _fail(breaker, 2) == [None, None]
    assert _fail(breaker) == [OPEN]
    assert breaker.state is OPEN
    assert breaker.consecutive_failures == 3


def test_probe_after_cooldown_closes_on_success() -> None:
    breaker, clock = _breaker()
    _fail(breaker, 3)
    assert breaker.seconds_until_probe() == 5
    clock.now += 4.9
    assert breaker.start_probe() is None
    assert breaker.seconds_until_probe() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.start_probe() is HALF_OPEN
    assert breaker.seconds_until_probe() is None
    assert breaker.record(breaker.ticket(), ok=True) is CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.cooldown_seconds == 5


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    breaker, clock = _breaker()
    _fail(breaker, 3)
    cooldowns = []
    for _ in range(5):
        clock.now += breaker.cooldown_seconds
        assert breaker.start_probe() is HALF_OPEN
        assert _fail(breaker) == [OPEN]
        cooldowns.append(breaker.cooldown_seconds)
    assert cooldowns == [10, 20, 30, 30, 30]
    clock.now += 30
    breaker.start_probe()
    assert breaker.record(breaker.ticket(), ok=True) is CLOSED
    assert breaker.cooldown_seconds == 5  # a recovered subscriber starts over
    assert _fail(breaker, 3)[-1] is OPEN
    assert breaker.seconds_until_probe() == 5


def test_results_of_deliveries_started_before_a_change_do_not_count() -> None:
    breaker, clock = _breaker()
    early = [breaker.ticket() for _ in range(5)]  # five messages in flight
    for ticket in early[:3]:
        breaker.record(ticket, ok=False)
    assert breaker.state is OPEN
    # The other two finish while open: ignored, the cool-down is not extended.
    assert breaker.record(early[3], ok=False) is None
    clock.now += 5
    breaker.start_probe()
    probe = breaker.ticket()
    # A late success from before the circuit opened must not decide the probe.
    assert breaker.record(early[4], ok=True) is None
    assert breaker.state is HALF_OPEN
    assert breaker.record(probe, ok=False) is OPEN


def test_disabled_breaker_never_opens() -> None:
    breaker, _ = _breaker(enabled=False)
    assert _fail(breaker, 100) == [None] * 100
    assert breaker.state is CLOSED


def test_reset_closes_from_any_state() -> None:
    breaker, _ = _breaker()
    assert breaker.reset() is None
    _fail(breaker, 3)
    assert breaker.reset() is CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.record(breaker.ticket(), ok=False) is None


def test_state_values_are_the_gauge_values() -> None:
    assert [int(s) for s in (CLOSED, OPEN, HALF_OPEN)] == [0, 1, 2]
    assert HALF_OPEN.label == "half_open"


def test_gone_dead_letters_at_once_with_reason_gone() -> None:
    from config.subscribers import RetryPolicy

    gone = DeliveryResult("http_error", 410, 0.01, "HTTP 410")
    assert next_attempt(1, gone, RetryPolicy(delays_seconds=(30, 300))) == DeadLetter("gone")


# --- subscriber file -------------------------------------------------------------

_ONE = """\
subscribers:
  - id: shop
    url: https://shop.example/hook
    secret: s3cret
    account: acme
    events: ["order.*"]
"""


def test_file_wide_policy_and_per_subscriber_override_merge() -> None:
    text = _ONE + (
        "    circuit_breaker: {cooldown_seconds: 600}\n"
        "circuit_breaker: {failure_threshold: 2, max_cooldown_seconds: 900}\n"
    )
    file = parse_subscriber_file(text, source="subs.yaml", environ={})
    policy = file.circuit_breaker.overridden_by(file.subscribers[0].circuit_breaker)
    assert policy == CircuitBreakerPolicy(
        enabled=True, failure_threshold=2, cooldown_seconds=600, max_cooldown_seconds=900
    )


def test_defaults_apply_without_any_setting() -> None:
    file = parse_subscriber_file(_ONE, source="subs.yaml", environ={})
    assert file.circuit_breaker.overridden_by(file.subscribers[0].circuit_breaker) == (
        CircuitBreakerPolicy(failure_threshold=5, cooldown_seconds=5, max_cooldown_seconds=300)
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "circuit_breaker: {failure_threshold: 0}\n",
            "subs.yaml: circuit_breaker.failure_threshold: must be at least 1",
        ),
        ("circuit_breaker: {bogus: 1}\n", "subs.yaml: circuit_breaker.bogus: unknown key"),
        (
            "circuit_breaker: {cooldown_seconds: 10, max_cooldown_seconds: 5}\n",
            "subs.yaml: circuit_breaker: max_cooldown_seconds (5) must be at least "
            "cooldown_seconds (10)",
        ),
        (
            "    circuit_breaker: {cooldown_seconds: 600}\n",
            "subs.yaml: subscribers[0] (id 'shop').circuit_breaker: max_cooldown_seconds (300) "
            "must be at least cooldown_seconds (600)",
        ),
        (
            "    circuit_breaker: {cooldown_seconds: fast}\n",
            "subs.yaml: subscribers[0] (id 'shop').circuit_breaker.cooldown_seconds: "
            "must be a number",
        ),
        ("circuit_breaker: 5\n", "subs.yaml: circuit_breaker: must be a mapping of keys to values"),
    ],
)
def test_circuit_breaker_mistakes_are_located(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_subscriber_file(_ONE + extra, source="subs.yaml", environ={})
    assert str(error.value).startswith(message)
