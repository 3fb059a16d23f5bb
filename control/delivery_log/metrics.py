"""The recorder's Prometheus metrics (its own process: the worker's are not exported here).

No label carries an account, an endpoint or an event id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]

RECORD_RESULTS = ("written", "duplicate", "invalid")

RECORDS = Counter(
    "webhook_recorder_records_total",
    "Attempt records taken from the delivery log queue, by result: written to the "
    "store, duplicate (already stored: a batch delivered twice), invalid (refused, "
    "moved to webhooks.attempts.invalid; a batch that cannot be read at all counts 1).",
    ["result"],
)
WRITE_DURATION = Histogram(
    "webhook_recorder_write_seconds",
    "One committed write of a batch of attempt records.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "webhook_recorder_lag_seconds",
    "Age of the oldest attempt record the recorder has received and not yet committed "
    "(0 when it holds none); grows while the database is slow or down.",
)
QUEUE_MESSAGES = Gauge(
    "webhook_recorder_queue_messages",
    "Batches of attempt records waiting in the delivery log queue (up to 250 records each).",
)
STORE_AVAILABLE = Gauge(
    "webhook_recorder_store_available",
    "1 while the recorder's last write to the store succeeded, 0 while it retries.",
)
KEPT_ATTEMPTS = Gauge(
    "webhook_delivery_log_kept_attempts",
    "Attempts the delivery log holds, as of the last retention pass.",
)
KEPT_BODIES = Gauge(
    "webhook_delivery_log_kept_bodies",
    "Event bodies the delivery log holds, as of the last retention pass.",
)
OLDEST_ATTEMPT_AGE = Gauge(
    "webhook_delivery_log_oldest_attempt_age_seconds",
    "Age of the oldest attempt kept, as of the last retention pass (stays below the "
    "retention age plus one pass interval while retention works).",
)
DELETED = Counter(
    "webhook_delivery_log_deleted_total",
    "Rows retention deleted, by table (attempts, bodies).",
    ["table"],
)
