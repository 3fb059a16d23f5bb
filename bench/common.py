"""What the benchmark's publisher and receiver agree on."""

from __future__ import annotations

import re
import zlib

# The publisher stamps each event's data with its publish time; the receiver
# reads it back from the delivered body without parsing the whole JSON.  A
# string, not a number: nanoseconds since 1970 exceed 2**53, and such a number
# sends the worker down its slow JSON path (JS rounds it), which real order
# payloads never take.
SENT_FIELD = "benchSentNs"
SENT_PATTERN = re.compile(rb'"benchSentNs":"(\d+)"')


def attempt_fails(event_id: str, attempt: int, fail_rate: float) -> bool:
    """Whether the receiver answers 500 to this attempt (deterministic, ~fail_rate of attempts)."""
    if fail_rate <= 0:
        return False
    return zlib.crc32(f"{event_id}/{attempt}".encode()) < fail_rate * 2**32


def eventually_delivered(event_id: str, fail_rate: float, max_attempts: int) -> bool:
    """False when every attempt of this event fails (it ends in the dead-letter queue)."""
    return not all(attempt_fails(event_id, a, fail_rate) for a in range(1, max_attempts + 1))
