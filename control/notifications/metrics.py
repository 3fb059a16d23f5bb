"""The notifier's Prometheus metrics (bounded labels: fixed kinds and destinations)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# "unreadable": a message on the facts queue that is not a fact (logged, then acked).
FACT_KINDS = ("paused", "circuit_opened", "circuit_closed", "dead_lettered", "unreadable")
DESTINATIONS = ("operator", "account")

FACTS = Counter(
    "webhook_notifier_facts_total",
    "Operational facts the notifier consumed, by kind (unreadable = not a fact).",
    ["kind"],
)
NOTICES_SENT = Counter(
    "webhook_notices_sent_total",
    "Notices a notification URL accepted (2xx), by destination (operator, account).",
    ["destination"],
)
NOTICES_GIVEN_UP = Counter(
    "webhook_notices_given_up_total",
    "Notices given up after their retries (or refused for good), by destination.",
    ["destination"],
)
WINDOWS_OPEN = Gauge(
    "webhook_notifier_windows_open",
    "Endpoints with facts waiting for their notice (the rate limit holds them).",
)
READY = Gauge(
    "webhook_notifier_ready",
    "1 while the notifier is connected and consuming the operational-facts queue.",
)
