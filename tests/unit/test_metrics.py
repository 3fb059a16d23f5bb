"""worker/metrics.py: bounded label values."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import pytest

from worker import metrics
from worker.circuit_breaker import CircuitState
from worker.health import HealthServer


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (0, "none"),
        (-1, "none"),
        (200, "2xx"),
        (204, "2xx"),
        (299, "2xx"),
        (301, "3xx"),
        (399, "3xx"),
        (400, "4xx"),
        (404, "4xx"),
        (409, "4xx"),
        (410, "410"),
        (429, "429"),
        (499, "4xx"),
        (500, "5xx"),
        (503, "5xx"),
        (599, "5xx"),
        (101, "other"),
        (199, "other"),
        (600, "other"),
        (999, "other"),
    ],
)
def test_status_label(status: int, label: str) -> None:
    assert metrics.status_label(status) == label


def test_status_label_values_are_bounded() -> None:
    seen = {metrics.status_label(status) for status in range(-1, 1000)}
    assert seen == set(metrics.STATUS_LABELS)


async def test_metrics_endpoint_exports_no_created_series() -> None:
    """disable_created_metrics(): counters and histograms come without `_created`."""
    metrics.DELIVERIES.labels("created-check", "order.created", "success", "2xx").inc()
    metrics.ATTEMPT_DURATION.labels("created-check").observe(0.1)
    metrics.DEAD_LETTERED.labels("created-check", "exhausted").inc()
    server = HealthServer("127.0.0.1", 0, lambda: True)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        await server.stop()
    text = body.decode()
    assert 'webhook_deliveries_total{event="order.created"' in text
    assert "webhook_attempt_duration_seconds_bucket{" in text
    assert "_created" not in text


def test_circuit_states_are_the_breakers() -> None:
    assert tuple(state.label for state in CircuitState) == metrics.CIRCUIT_STATES


def _circuit(subscriber: str) -> dict[str, float]:
    return {
        state: metrics.CIRCUIT_STATE.labels(subscriber, state)._value.get()
        for state in metrics.CIRCUIT_STATES
    }


def test_circuit_state_is_one_series_per_state() -> None:
    """Exactly one state is 1, so a sum over replicas counts replicas per state."""
    metrics.set_circuit_state("circuit-check", "closed")
    assert _circuit("circuit-check") == {"closed": 1, "open": 0, "half_open": 0}
    metrics.set_circuit_state("circuit-check", CircuitState.OPEN.label)
    assert _circuit("circuit-check") == {"closed": 0, "open": 1, "half_open": 0}
    metrics.set_circuit_state("circuit-check", CircuitState.HALF_OPEN.label)
    assert _circuit("circuit-check") == {"closed": 0, "open": 0, "half_open": 1}
    with pytest.raises(ValueError, match="unknown circuit state"):
        metrics.set_circuit_state("circuit-check", "ajar")
    assert _circuit("circuit-check") == {"closed": 0, "open": 0, "half_open": 1}


def _series(name: str, subscriber: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name`` for ``subscriber`` in the registry, as exported."""
    from prometheus_client import REGISTRY

    return [
        (sample.labels, sample.value)
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and sample.labels.get("subscriber") == subscriber
    ]


def test_an_idle_lane_in_the_default_state_exports_nothing() -> None:
    metrics.set_lane_state("idle-lane", "closed", paused=False, disabled=False)
    for name in ("webhook_circuit_state", "webhook_subscriber_paused", "webhook_in_flight"):
        assert _series(name, "idle-lane") == []
    metrics.forget_subscriber("idle-lane")


def test_a_lane_not_in_the_default_state_is_exported_and_stays_so() -> None:
    metrics.set_lane_state("off-lane", "closed", paused=False, disabled=True)
    assert _series("webhook_subscriber_disabled", "off-lane") == [({"subscriber": "off-lane"}, 1)]
    assert _circuit("off-lane") == {"closed": 1, "open": 0, "half_open": 0}
    # Back to the default: the series stay, at 0, so the change is visible.
    metrics.set_lane_state("off-lane", "closed", paused=False, disabled=False)
    assert _series("webhook_subscriber_disabled", "off-lane") == [({"subscriber": "off-lane"}, 0)]
    metrics.set_lane_state("off-lane", "open", paused=True, disabled=False)
    assert _circuit("off-lane") == {"closed": 0, "open": 1, "half_open": 0}
    assert _series("webhook_subscriber_paused", "off-lane") == [({"subscriber": "off-lane"}, 1)]
    with pytest.raises(ValueError, match="unknown circuit state"):
        metrics.set_lane_state("off-lane", "ajar", paused=False, disabled=False)
    metrics.forget_subscriber("off-lane")


def test_the_first_message_exports_the_lane_state_and_forgetting_drops_every_series() -> None:
    metrics.set_lane_state("busy-lane", "closed", paused=False, disabled=False)
    made = metrics.instruments("busy-lane")
    assert metrics.instruments("busy-lane") is made  # looked up, not made again
    made.delivered("order.created", "success", 200)
    made.delivered("order.created", "http_error", 503)
    made.attempt_duration.observe(0.1)
    made.retry_scheduled(2)
    made.dead_lettered("exhausted")
    made.transition("open")
    assert _circuit("busy-lane") == {"closed": 1, "open": 0, "half_open": 0}
    deliveries = _series("webhook_deliveries_total", "busy-lane")
    assert sorted((labels["status"], value) for labels, value in deliveries) == [
        ("2xx", 1),
        ("5xx", 1),
    ]
    assert _series("webhook_retries_scheduled_total", "busy-lane")
    metrics.forget_subscriber("busy-lane")
    for name in (
        "webhook_circuit_state",
        "webhook_subscriber_paused",
        "webhook_subscriber_disabled",
        "webhook_in_flight",
        "webhook_deliveries_total",
        "webhook_attempt_duration_seconds_count",
        "webhook_end_to_end_latency_seconds_count",
        "webhook_retries_scheduled_total",
        "webhook_dead_lettered_total",
        "webhook_circuit_transitions_total",
    ):
        assert _series(name, "busy-lane") == [], name
    # A lane of the same id later starts from nothing.
    assert metrics.instruments("busy-lane") is not made
    metrics.forget_subscriber("busy-lane")


async def test_metrics_are_rendered_off_the_event_loop() -> None:
    """A slow render does not stop the loop: /healthz answers while /metrics renders."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    rendering = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Slow(Collector):
        def collect(self) -> Any:
            loop.call_soon_threadsafe(rendering.set)
            time.sleep(1.0)
            yield GaugeMetricFamily("webhook_test_slow_render", "A render that takes 1 s.", 1)

    slow = Slow()
    REGISTRY.register(slow)
    server = HealthServer("127.0.0.1", 0, lambda: True)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        scrape = asyncio.create_task(
            asyncio.to_thread(lambda: urllib.request.urlopen(f"{base}/metrics", timeout=10).read())
        )
        await asyncio.wait_for(rendering.wait(), timeout=5)
        started = time.monotonic()
        health = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
        )
        answered = time.monotonic() - started
        assert not scrape.done()  # still rendering when /healthz answered
        body = await scrape
    finally:
        REGISTRY.unregister(slow)
        await server.stop()
    assert b'"ok"' in health
    assert answered < 0.5
    assert b"webhook_test_slow_render 1.0" in body
