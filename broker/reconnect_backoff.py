"""Opening a broker connection again and again until it works or a stop is asked.

The worker's connector and the queue consumer (recorder, notifier) share it:
exponential waits with jitter (tenacity), retried on BrokerError only, each
wait cut short by a stop, never an error once a stop is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from config.errors import BrokerError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between connection attempts: exponential from ``first`` up to ``most`` seconds,
    plus up to ``jitter`` seconds (``first`` when not given) so replicas do not retry in step."""

    first_seconds: float = 0.5
    most_seconds: float = 15.0
    jitter_seconds: float | None = None


async def open_until_stopped(
    open_once: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    stop: asyncio.Event,
    sleep: Callable[[float], Awaitable[None]],
) -> T | None:
    """What ``open_once`` returns, retried after each BrokerError; None once ``stop`` is set.

    ``sleep`` waits between attempts; a stop-aware one ends the wait when a stop is asked.
    """
    jitter = backoff.first_seconds if backoff.jitter_seconds is None else backoff.jitter_seconds
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(BrokerError),
        wait=wait_exponential_jitter(
            multiplier=backoff.first_seconds, max=backoff.most_seconds, jitter=jitter
        ),
        stop=lambda _state: stop.is_set(),
        sleep=sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                if stop.is_set():
                    return None
                return await open_once()
    except BrokerError:
        return None  # only reached when stopping mid-retry
    return None
