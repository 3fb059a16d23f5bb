"""worker/metrics.py: bounded label values."""

from __future__ import annotations

import asyncio
import urllib.request

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
