"""The sizes of a ``python -m bench`` run: full, ``--quick`` and ``--tiny``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; ``--quick`` and ``--tiny`` pick smaller ones."""

    events: int = 20_000  # flat-out and backlog scenarios
    steady_rate: float = 500.0
    steady_seconds: float = 20.0
    workers: tuple[int, ...] = (1, 2)
    fail_rate: float = 0.10
    retry_delay: float = 0.2
    sweep: tuple[int, ...] = (1, 10, 100, 1000)
    sweep_deliveries: int = 10_000
    probe_requests: int = 10_000
    single_publishes: int = 2_000
    in_flight: int = 16
    # A second value for the flat-out rows: with one subscriber, 16 requests in
    # flight leave the worker waiting on the broker's ack round trips.
    wide_in_flight: int = 64
    scenario_timeout: float = 180.0
    run_timeout: float = 1500.0
    tiny: bool = False


PLANS = {
    "full": Plan(),
    "quick": Plan(
        events=5_000,
        steady_seconds=6.0,
        sweep_deliveries=2_000,
        probe_requests=3_000,
        single_publishes=1_000,
        scenario_timeout=90.0,
        run_timeout=600.0,
    ),
    "tiny": Plan(
        events=300,
        steady_rate=200.0,
        steady_seconds=1.0,
        workers=(1,),
        sweep=(1,),
        sweep_deliveries=200,
        probe_requests=300,
        single_publishes=100,
        scenario_timeout=20.0,
        run_timeout=120.0,
        tiny=True,
    ),
}
