"""An attempt's record for the delivery log, built where the attempt is made.

Secrets are masked here, in the worker, so that no copy of a response that
echoes the endpoint's secret ever reaches the broker or the store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from config.subscriber_record import AnySubscriber
from wire.attempt_record import (
    ERROR_CHARS,
    HEADER_ALLOW_LIST,
    HEADER_VALUE_CHARS,
    AttemptRecord,
    Disposition,
)
from wire.queued_event import QueuedEvent
from worker.delivery import DeliveryResult
from worker.retry import DeadLetter, Retry

MASK = b"***"
# Shorter values are not masked: they would blank ordinary words, and no real
# signing secret is that short.
MIN_MASKED_CHARS = 8
# A secret cut by the end of the excerpt: this many of its first characters
# (or more) at the very end are masked too.
MIN_TAIL_CHARS = 4


def secret_forms(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """Every form of the secrets worth masking, longest first.

    A ``whsec_`` secret is also its base64 key alone, with and without padding:
    a receiver that logs its key may well log it without the prefix.
    """
    forms: set[str] = set()
    for secret in secrets:
        key = secret.removeprefix("whsec_")
        forms.update((secret, key, key.rstrip("=")))
    chosen = (form.encode("utf-8", "surrogatepass") for form in forms)
    return tuple(sorted((f for f in chosen if len(f) >= MIN_MASKED_CHARS), key=len, reverse=True))


def mask(data: bytes, forms: tuple[bytes, ...]) -> bytes:
    """``data`` with every form replaced, and a form's cut-off beginning at the end masked."""
    for form in forms:
        if form in data:
            data = data.replace(form, MASK)
    for form in forms:
        for size in range(min(len(form) - 1, len(data)), MIN_TAIL_CHARS - 1, -1):
            if data.endswith(form[:size]):
                return data[:-size] + MASK
    return data


def mask_text(text: str, forms: tuple[bytes, ...]) -> str:
    """``mask`` for text."""
    data = text.encode("utf-8", "surrogatepass")
    masked = mask(data, forms)
    return text if masked == data else masked.decode("utf-8", "replace")


def capture(
    subscriber: AnySubscriber,
    event: QueuedEvent,
    result: DeliveryResult,
    step: Retry | DeadLetter | None,
    *,
    ended_at: float | None = None,
) -> AttemptRecord:
    """The record of the attempt that gave ``result``, and of the step taken after it.

    Built without validation (the worker trusts what it made; the recorder
    validates) because this runs once per delivery.
    """
    end = time.time() if ended_at is None else ended_at
    start = round(end - result.duration_seconds, 6)
    forms = secret_forms(subscriber.signing_secrets())
    disposition: Disposition
    next_attempt: int | None = None
    reason: str | None = None
    if step is None:
        disposition = "delivered"
    elif isinstance(step, Retry):
        disposition, next_attempt = "retry", step.attempt
    else:
        disposition, reason = "dead_lettered", step.reason
    headers = {
        name: mask_text(value[:HEADER_VALUE_CHARS], forms)
        for name, value in result.response_headers
        if name in HEADER_ALLOW_LIST
    }
    error = None if result.error is None else mask_text(result.error[:ERROR_CHARS], forms)
    return AttemptRecord.model_construct(
        event_id=event.event_id,
        account=event.account or "",
        endpoint_id=subscriber.id,
        event_type=event.event_type,
        attempt=event.attempt,
        started_at=datetime.fromtimestamp(start, UTC),
        ended_at=datetime.fromtimestamp(end, UTC),
        duration_seconds=result.duration_seconds,
        outcome=result.outcome,
        status=result.status or None,
        error=error,
        response_headers=headers,
        response_excerpt=mask(result.response_excerpt, forms),
        disposition=disposition,
        next_attempt=next_attempt,
        dead_letter_reason=reason,
        # Once per event: with its first attempt at each endpoint (a replay's too).
        body=event.body if event.attempt == 1 else None,
    )
