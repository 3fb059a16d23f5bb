"""worker/metrics.py: bounded label values."""

from __future__ import annotations

import pytest

from worker import metrics


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
