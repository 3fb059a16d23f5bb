"""What happens after a failed attempt: wait in a delay queue, or dead-letter (and pause)."""

from __future__ import annotations

from dataclasses import dataclass

from config.subscribers import RetryPolicy
from worker.delivery import DeliveryResult

# Receivers asking us to back off with Retry-After on these statuses are obeyed.
BACKOFF_STATUSES = (429, 503)
# The endpoint says it is gone for good: retrying would only burn attempts.
GONE = 410
_GONE_REASON = "gone"


@dataclass(frozen=True)
class Retry:
    """Publish to the delay queue for ``delay_seconds``, to come back as ``attempt``."""

    attempt: int
    delay_seconds: float


@dataclass(frozen=True)
class DeadLetter:
    """Move to the subscriber's dead-letter queue; ``reason`` is a metrics label."""

    reason: str

    @property
    def pauses_subscriber(self) -> bool:
        """The endpoint is gone: deliver nothing more to it until an operator resumes it."""
        return self.reason == _GONE_REASON


def next_attempt(attempt: int, result: DeliveryResult, policy: RetryPolicy) -> Retry | DeadLetter:
    """Decide the next step after attempt number ``attempt`` failed with ``result``."""
    if result.status == GONE:
        return DeadLetter(_GONE_REASON)
    if attempt >= policy.max_attempts:
        return DeadLetter("exhausted")
    delay = policy.delays_seconds[attempt - 1]
    wanted = result.retry_after_seconds
    if result.status in BACKOFF_STATUSES and wanted is not None and wanted > delay:
        # Only fixed-TTL queues exist, so take the shortest one that is long enough.
        longer = sorted(d for d in policy.delays_seconds if d >= wanted)
        if not longer:
            return DeadLetter("retry_after_too_long")
        delay = longer[0]
    return Retry(attempt + 1, delay)
