"""The ``GET /status`` document: what a running worker tells an operator about its lanes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from config.topology import work_queue
from worker.lane import Lane


def _lane_status(lane: Lane) -> dict[str, Any]:
    breaker = lane.breaker
    probe_in = breaker.seconds_until_probe()
    return {
        "id": lane.subscriber.id,
        "config_state": lane.config_state,
        "circuit": breaker.state.label,
        "paused": lane.paused,
        "consuming": lane.tag is not None,
        "prefetch": lane.prefetch,
        "consecutive_failures": breaker.consecutive_failures,
        "cooldown_seconds": breaker.cooldown_seconds,
        "probe_in_seconds": None if probe_in is None else round(probe_in, 3),
    }


def status_document(
    *,
    ready: bool,
    lanes: Iterable[Lane],
    removed: Mapping[str, int],
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per subscriber, circuit state and pause; ``removed``: unconfigured id -> queued events;
    ``config``: the applied configuration's source and version."""
    return {
        "ready": ready,
        "config": dict(config or {}),
        "subscribers": [_lane_status(lane) for lane in lanes],
        # Seen at the last connect or removal: no longer configured, events still queued.
        "removed_subscribers_with_queues": [
            {"id": i, "queue": work_queue(i), "messages": n} for i, n in sorted(removed.items())
        ],
    }
