"""The producer's reconnect policy: exponential backoff, bounded in attempts and in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from config.errors import BrokerUnavailableError

T = TypeVar("T")


class Transient(Exception):
    """A connection-level failure worth reconnecting for; never leaves the producer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Backoff:
    """Runs an operation again after each :class:`Transient` failure, waiting longer each time.

    ``where`` names the broker (passwords masked) in the error raised when the
    attempts or the time are used up.
    """

    def __init__(
        self,
        *,
        attempts: int,
        max_seconds: float,
        initial_seconds: float,
        max_wait_seconds: float,
        where: str,
        log: Any,
    ) -> None:
        self.attempts = attempts
        self._max_seconds = max_seconds
        self._initial = initial_seconds
        self._max_wait = max_wait_seconds
        self._where = where
        self._log = log

    def run(self, operation: Callable[[], T]) -> T:
        """Return what ``operation`` returns; raises BrokerUnavailableError after the retries."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self._max_seconds),
            wait=wait_exponential(multiplier=self._initial, max=self._max_wait),
            retry=retry_if_exception_type(Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(operation)
        except Transient as exc:
            attempts = retrying.statistics.get("attempt_number", self.attempts)
            self._log.warning("broker_unavailable", attempts=attempts, reason=exc.reason)
            raise BrokerUnavailableError(
                f"RabbitMQ at {self._where} is unavailable: gave up after "
                f"{attempts} attempt(s) in {time.monotonic() - started:.1f} s; "
                f"last error: {exc.reason}"
            ) from None

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._log.warning(
            "broker_connection_failed",
            attempt=state.attempt_number,
            retry_in_seconds=round(state.upcoming_sleep, 3),
            reason=error.reason if isinstance(error, Transient) else repr(error),
        )
