"""What ``python -m bench`` measured: one record per table row, and the JSON form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the main table."""

    scenario: str
    workers: int
    events: int
    delivered: int = 0
    deliveries_per_s: float = math.nan
    publish_per_s: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    worker_cpu_per_1k: float = math.nan
    worker_peak_rss_mb: float = math.nan
    receiver_cpu_per_1k: float = math.nan
    broker_cpu_per_1k: float = math.nan
    other_load_pct: float = math.nan
    attempts: int = 0
    note: str = ""


@dataclass
class SweepRow:
    subscribers: int
    declare_first_s: float = math.nan
    declare_again_s: float = math.nan
    start_s: float = math.nan
    rss_ready_mb: float = math.nan
    peak_rss_mb: float = math.nan
    deliveries: int = 0
    delivered: int = 0
    deliveries_per_s: float = math.nan
    worker_cpu_per_1k: float = math.nan
    note: str = ""


@dataclass
class ProducerRow:
    mode: str
    events: int
    confirmed_per_s: float = math.nan
    call_p50_ms: float = math.nan
    call_p99_ms: float = math.nan
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    sweep: list[SweepRow] = field(default_factory=list)
    producer: list[ProducerRow] = field(default_factory=list)
    receiver_alone_per_s: float = math.nan
    receiver_alone_cpu_per_1k: float = math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def results_as_json(results: Results) -> dict[str, Any]:
    """The results as plain JSON values (NaN, "not measured", becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(asdict(results))  # type: ignore[no-any-return]
