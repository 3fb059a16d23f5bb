"""POST one notice to one destination, retrying a bounded number of times.

Same HTTP client as deliveries (worker.http_client: pooled aiohttp, the
address policy against SSRF).  The operator's URL is the operator's own choice
and may be internal; an account's URL is a merchant's, so it gets the same
address policy (and egress proxy) as the account's endpoints.  A notice
answered 2xx is sent; one that still fails after ``attempts`` (or is refused
with a 4xx other than 408/429, which retrying will not change) is given up:
logged and counted, and the caller acks its facts all the same.  Each attempt
is signed afresh (the receiver's clock-skew check sees a current ``t=``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from config.errors import DeliveryTransportError
from control.notifications import metrics
from control.notifications.destinations import Destination
from control.notifications.notice import notice_headers
from worker.http_client import HttpClient

log = structlog.get_logger("notifier")

_RETRYABLE_4XX = (408, 429)
_EXCERPT_BYTES = 256


@dataclass(frozen=True)
class RetryPlan:
    """How hard to try one destination."""

    attempts: int = 5
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 10.0


class NoticeSender:
    """Sends notices; owns the two HTTP clients (operator, accounts)."""

    def __init__(
        self,
        *,
        allow_private_accounts: bool,
        proxy: str | None = None,
        plan: RetryPlan | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._operator = HttpClient(allow_private_networks=True, pool_size=16)
        self._accounts = HttpClient(
            allow_private_networks=allow_private_accounts, proxy=proxy, pool_size=64
        )
        self.plan = plan or RetryPlan()
        self._sleep = sleep

    async def close(self) -> None:
        """Close both clients' connections."""
        await self._operator.close()
        await self._accounts.close()

    async def send(
        self, destination: Destination, body: bytes, event: str, notice: str, **about: str | None
    ) -> bool:
        """POST until 2xx or the plan runs out; True if sent. ``about`` goes into the logs."""
        plan = self.plan
        client = self._operator if destination.kind == "operator" else self._accounts
        error = "not tried"
        backoff = plan.first_backoff_seconds
        for attempt in range(1, plan.attempts + 1):
            status, error = await self._attempt(client, destination, body, event, notice)
            if 200 <= status < 300:
                metrics.NOTICES_SENT.labels(destination.kind).inc()
                log.info(
                    "notice_sent",
                    destination=destination.kind,
                    notice_id=notice,
                    notice_event=event,
                    attempt=attempt,
                    **about,
                )
                return True
            if 400 <= status < 500 and status not in _RETRYABLE_4XX:
                break
            if attempt < plan.attempts:
                await self._sleep(backoff)
                backoff = min(backoff * 2, plan.max_backoff_seconds)
        metrics.NOTICES_GIVEN_UP.labels(destination.kind).inc()
        log.error(
            "notice_given_up",
            destination=destination.kind,
            notice_id=notice,
            notice_event=event,
            error=error,
            **about,
        )
        return False

    async def _attempt(
        self, client: HttpClient, destination: Destination, body: bytes, event: str, notice: str
    ) -> tuple[int, str]:
        """(status, error): status 0 when no HTTP answer came."""
        headers = notice_headers(
            body,
            event,
            notice,
            destination.secret.get_secret_value(),
            now_ms=time.time_ns() // 1_000_000,
        )
        try:
            target = client.target(destination.url)
            response = await client.post(
                target,
                headers,
                body,
                timeout_seconds=self.plan.timeout_seconds,
                connect_timeout_seconds=min(5.0, self.plan.timeout_seconds),
                excerpt_bytes=_EXCERPT_BYTES,
            )
        except TimeoutError:
            return 0, f"timed out after {self.plan.timeout_seconds:g} s"
        except DeliveryTransportError as exc:
            return 0, str(exc)[:200]
        if 200 <= response.status < 300:
            return response.status, ""
        return response.status, f"HTTP {response.status}"
