"""One HTTP delivery attempt: sign, POST, classify the outcome as a value."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from config import message as wire
from config.signature import sign
from config.subscribers import Subscriber
from worker.address_policy import PublicOnlyResolver, find_forbidden, is_public_address
from worker.incoming import QueuedEvent

Outcome = Literal["success", "http_error", "timeout", "connection_error", "forbidden_address"]

# Enough of a response body to show an operator what went wrong.
RESPONSE_EXCERPT_BYTES = 512


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one attempt. ``status`` is 0 when there was no HTTP response."""

    outcome: Outcome
    status: int
    duration_seconds: float
    error: str | None = None
    response_excerpt: bytes = b""
    retry_after_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "success"


def standard_webhooks_signature(secret: str, event_id: str, timestamp_s: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value (``v1,<base64>``).

    A ``whsec_``-prefixed secret is base64 key material, as that spec defines;
    any other secret is used as its UTF-8 bytes.
    """
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode("utf-8")
    )
    signed = f"{event_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: treated as absent, the normal delay applies
    if when.tzinfo is None:
        return None  # RFC 9110 dates are always GMT; anything else is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Deliverer:
    """Owns the HTTP connection pool; ``deliver`` never raises for network outcomes."""

    def __init__(self, *, allow_private_networks: bool, pool_size: int = 256) -> None:
        self._allow_private = allow_private_networks
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        # Per-URL and per-timeout values, computed once instead of per attempt.
        self._forbidden_literal: dict[str, str | None] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}
        self._slots = asyncio.Semaphore(pool_size)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            resolver=None if self._allow_private else PublicOnlyResolver(),
            ttl_dns_cache=60,
        )
        # trust_env=False: a proxy from the environment must not route around the
        # address policy. auto_decompress stays on; we only read a small excerpt.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Deliverer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def headers_for(
        self, subscriber: Subscriber, event: QueuedEvent, *, now_ms: int, test: bool = False
    ) -> dict[str, str]:
        """All HTTP headers of one attempt, signature included."""
        secret = subscriber.secret.get_secret_value()
        headers = {
            "Content-Type": wire.CONTENT_TYPE,
            "User-Agent": wire.USER_AGENT,
            wire.HTTP_SIGNATURE: sign(secret, event.body, now_ms),
            wire.HTTP_EVENT: event.event_type,
            wire.HTTP_ATTEMPT: str(event.attempt),
            wire.HTTP_ID: event.event_id,
        }
        if subscriber.standard_webhooks:
            seconds = now_ms // 1000
            headers["webhook-id"] = event.event_id
            headers["webhook-timestamp"] = str(seconds)
            headers["webhook-signature"] = standard_webhooks_signature(
                secret, event.event_id, seconds, event.body
            )
        if test:
            headers[wire.HTTP_TEST] = "true"
        return headers

    async def deliver(
        self, subscriber: Subscriber, event: QueuedEvent, *, test: bool = False
    ) -> DeliveryResult:
        """POST ``event`` to ``subscriber`` once; every outcome is a DeliveryResult."""
        if self._session is None:
            raise RuntimeError("Deliverer.start() first")
        # Wait for one of the pool's connections here, holding nothing but this
        # coroutine: with many subscribers thousands of messages can be in flight
        # at once, and each one queued inside aiohttp's pool held a whole prepared
        # request (and had its timeout running while it waited).
        async with self._slots:
            return await self._attempt(self._session, subscriber, event, test)

    async def _attempt(
        self, session: aiohttp.ClientSession, subscriber: Subscriber, event: QueuedEvent, test: bool
    ) -> DeliveryResult:
        started = time.monotonic()

        def result(
            outcome: Outcome,
            status: int = 0,
            error: str | None = None,
            excerpt: bytes = b"",
            retry_after: float | None = None,
        ) -> DeliveryResult:
            return DeliveryResult(
                outcome, status, time.monotonic() - started, error, excerpt, retry_after
            )

        if not self._allow_private:
            problem = self._literal_problem(subscriber.url)
            if problem is not None:
                # aiohttp skips the resolver for IP literals, so check them here.
                return result("forbidden_address", error=problem)

        headers = self.headers_for(subscriber, event, now_ms=time.time_ns() // 1_000_000, test=test)
        timeout = self._timeout(subscriber.timeout_seconds, subscriber.connect_timeout_seconds)
        try:
            url = self._urls.get(subscriber.url)
            if url is None:
                url = self._urls[subscriber.url] = URL(subscriber.url)
            async with session.post(
                url,
                data=event.body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                excerpt = await response.content.read(RESPONSE_EXCERPT_BYTES)
                status = response.status
                if 200 <= status < 300:
                    return result("success", status, excerpt=excerpt)
                error = f"HTTP {status}"
                if 300 <= status < 400:
                    error += " (redirects are not followed)"
                return result(
                    "http_error",
                    status,
                    error,
                    excerpt,
                    retry_after_seconds(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return result("timeout", error=f"timed out after {subscriber.timeout_seconds:g} s")
        except aiohttp.ClientError as exc:
            forbidden = find_forbidden(exc)
            if forbidden is not None:
                return result("forbidden_address", error=str(forbidden))
            return result("connection_error", error=_describe(exc))
        except OSError as exc:
            return result("connection_error", error=_describe(exc))

    def _literal_problem(self, url: str) -> str | None:
        """Why ``url``'s host, if an IP literal, may not be called; None when it may."""
        try:
            return self._forbidden_literal[url]
        except KeyError:
            pass
        host = urlsplit(url).hostname or ""
        problem = None
        if _is_ip_literal(host) and not is_public_address(host):
            problem = f"{host} is not a public address"
        self._forbidden_literal[url] = problem
        return problem

    def _timeout(self, total: float, connect: float) -> aiohttp.ClientTimeout:
        key = (total, connect)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=total, sock_connect=min(connect, total)
            )
        return timeout


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    """A short error for logs and DLQ headers (no URL path, which may carry a token)."""
    name = type(exc).__name__
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"{name}: {os_error.strerror}"
    text = str(exc).split(" url=")[0]
    return f"{name}: {text}"[:200]
