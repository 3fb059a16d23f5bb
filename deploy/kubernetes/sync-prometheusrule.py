#!/usr/bin/env python3
"""Write base/prometheusrule.yaml from config/prometheus/alerts.yml.

The alert and recording rules have one source of truth, the Prometheus rule file
that docker compose loads and the tests check with promtool. The Kubernetes
PrometheusRule carries the same groups; run this after editing alerts.yml:

    python deploy/kubernetes/sync-prometheusrule.py

tests/unit/test_kubernetes.py fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCE = ROOT / "config/prometheus/alerts.yml"
TARGET = HERE / "base/prometheusrule.yaml"

HEADER = """\
# GENERATED from config/prometheus/alerts.yml by deploy/kubernetes/sync-prometheusrule.py:
# edit alerts.yml, then run the script. tests/unit/test_kubernetes.py checks that
# spec.groups equals the groups of alerts.yml.
# Prometheus Operator: your Prometheus must select this rule (add the labels its
# ruleSelector wants, e.g. `release: kube-prometheus-stack`, in your overlay).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line PromQL stays readable as a literal block.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(SOURCE.read_text())["groups"]
    rule: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "webhook-relay",
            "labels": {"app.kubernetes.io/component": "worker"},
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
