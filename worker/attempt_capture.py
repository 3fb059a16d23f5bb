"""An attempt's record for the delivery log, built where the attempt is made.

Secrets are masked here, in the worker, so that no copy of a response that
echoes the endpoint's secret ever reaches the broker or the store.
"""

from __future__ import annotations

import functools
import time
from base64 import b64encode

from config.subscribers import Subscriber
from wire.attempt_record import (
    ERROR_CHARS,
    HEADER_ALLOW_LIST,
    HEADER_VALUE_CHARS,
    Disposition,
    WireRecord,
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


@functools.lru_cache(maxsize=4096)
def secret_forms(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """Every form of the secrets worth masking, longest first.

    A ``whsec_`` secret is also its base64 key alone, with and without padding:
    a receiver that logs its key may well log it without the prefix.  Cached:
    an endpoint's secrets are the same for every attempt (the cache is keyed by
    the secrets themselves, so a rotated secret is a new entry).
    """
    forms: set[str] = set()
    for secret in secrets:
        key = secret.removeprefix("whsec_")
        forms.update((secret, key, key.rstrip("=")))
    chosen = (form.encode("utf-8", "surrogatepass") for form in forms)
    return tuple(sorted((f for f in chosen if len(f) >= MIN_MASKED_CHARS), key=len, reverse=True))


def _may_hold(data: bytes, forms: tuple[bytes, ...]) -> bool:
    """Whether a form, whole or cut off, may be in ``data``: its first characters are.

    Without them there is nothing to mask: one search per form instead of a
    tail check per length (most answers and headers hold no secret at all).
    """
    return any(form[:MIN_TAIL_CHARS] in data for form in forms)


def mask(data: bytes, forms: tuple[bytes, ...]) -> bytes:
    """``data`` with every form replaced, and a form's cut-off beginning at the end masked."""
    if not _may_hold(data, forms):
        return data
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
    subscriber: Subscriber,
    event: QueuedEvent,
    result: DeliveryResult,
    step: Retry | DeadLetter | None,
    *,
    ended_at: float | None = None,
) -> WireRecord:
    """The record of the attempt that gave ``result``, and of the step taken after it.

    Built straight in its wire form (wire.attempt_record: what a batch holds),
    without validation: the worker trusts what it made and the recorder
    validates.  This runs once per delivery, so no model, no datetimes.
    """
    end = time.time() if ended_at is None else ended_at
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
        name: value[:HEADER_VALUE_CHARS]
        for name, value in result.response_headers
        if name in HEADER_ALLOW_LIST
    }
    # One look at all the values together: masked one by one only if needed.
    if headers and _may_hold("\n".join(headers.values()).encode("utf-8", "surrogatepass"), forms):
        headers = {name: mask_text(value, forms) for name, value in headers.items()}
    error = None if result.error is None else mask_text(result.error[:ERROR_CHARS], forms)
    excerpt = mask(result.response_excerpt, forms)
    return {
        "event_id": event.event_id,
        "account": event.account or "",
        "endpoint_id": subscriber.id,
        "event_type": event.event_type,
        "attempt": event.attempt,
        "started_at": end - result.duration_seconds,
        "ended_at": end,
        "duration_seconds": result.duration_seconds,
        "outcome": result.outcome,
        "status": result.status or None,
        "error": error,
        "response_headers": headers,
        "response_excerpt": b64encode(excerpt).decode("ascii") if excerpt else "",
        "disposition": disposition,
        "next_attempt": next_attempt,
        "dead_letter_reason": reason,
        # Once per event: with its first attempt at each endpoint (a replay's too).
        "body": b64encode(event.body).decode("ascii") if event.attempt == 1 else None,
    }
