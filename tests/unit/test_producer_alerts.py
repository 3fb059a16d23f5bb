"""The producer alerts of config/prometheus/alerts.yml, unit-tested with promtool.

Same pattern as ``_rule_test`` in test_deploy_files.py: made-up series at one
sample a minute, and the alerts expected (or not) at given times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_deploy_files import promtool_test_rules

PUBLISHED = "webhook_producer_events_published_total"
DEPTH = "webhook_producer_spool_depth"


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _events(instance: str, outcome: str, values: str) -> dict[str, str]:
    return _series(
        PUBLISHED,
        values,
        job="orders",
        instance=instance,
        event_type_class="order.created",
        outcome=outcome,
    )


def _depth(instance: str, values: str) -> dict[str, str]:
    return _series(DEPTH, values, job="orders", instance=instance)


def _alert(name: str, eval_time: str, *firing: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """``name`` at ``eval_time`` fires for exactly ``firing``: (instance, extra labels)."""
    return {
        "eval_time": eval_time,
        "alertname": name,
        "exp_alerts": [
            {"exp_labels": {"severity": "warning", "job": "orders", "instance": who, **labels}}
            for who, labels in firing
        ],
    }


FAILURES = "WebhookProducerPublishFailures"
SPOOL = "WebhookProducerSpoolNotDraining"


def _producer_rule_test(rules_file: Path) -> dict[str, Any]:
    unavailable = ("p1", {"outcome": "unavailable"})
    nacked = ("p4", {"outcome": "nacked"})
    failures = {
        "interval": "1m",
        "input_series": [
            # p1: cannot reach the broker from minute 6 on; its other events go out.
            _events("p1", "published", "0+60x40"),
            _events("p1", "unavailable", "0x5 1+1x34"),
            # p2: one unroutable event at minute 10, nothing after: a blip.
            _events("p2", "published", "0+60x40"),
            _events("p2", "unroutable", "0x9 1x30"),
            # p3: only invalid events (refused before sending): no broker failure.
            _events("p3", "invalid", "0+5x40"),
            # p4: nacks from minute 3 to minute 11, then healthy again.
            _events("p4", "nacked", "0x2 1+1x8 9x29"),
        ],
        "alert_rule_test": [
            _alert(FAILURES, "7m"),  # p4 failing for 4 minutes: pending
            _alert(FAILURES, "10m", nacked),  # p1 pending
            _alert(FAILURES, "11m", unavailable, nacked),
            _alert(FAILURES, "14m", unavailable, nacked),  # p2's blip stays pending
            _alert(FAILURES, "16m", unavailable),  # p4's rate is back at 0
            _alert(FAILURES, "25m", unavailable),
        ],
    }
    spools = {
        "interval": "1m",
        "input_series": [
            # p1: spooling from minute 6 on, and growing.
            _depth("p1", "0x5 3 5 8 10+5x33"),
            # p2: 4 minutes of spooling, then drained.
            _depth("p2", "0x5 4x3 0x30"),
            # p3: stuck at 2 events from minute 6, drained at 15, stuck again from 16.
            _depth("p3", "0x5 2x8 0 2x25"),
            _depth("idle", "0x40"),
        ],
        "alert_rule_test": [
            _alert(SPOOL, "15m"),  # p1 non-empty for 9 minutes: pending
            _alert(SPOOL, "16m", ("p1", {})),
            _alert(SPOOL, "25m", ("p1", {})),  # p3's 10 minutes start again at 16
            _alert(SPOOL, "26m", ("p1", {}), ("p3", {})),
        ],
    }
    return {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [failures, spools],
    }


def test_producer_alerts_with_promtool_unit_tests(tmp_path: Path) -> None:
    promtool_test_rules(tmp_path, _producer_rule_test)
