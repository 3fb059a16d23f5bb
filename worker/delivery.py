"""One HTTP delivery attempt: sign, POST, classify the outcome as a value."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import ssl
import time
from dataclasses import dataclass
from typing import Literal

from config.errors import DeliveryTransportError, ForbiddenAddressError
from config.subscriber_record import AnySubscriber
from wire import contract
from wire.attempt_record import EXCERPT_BYTES, HEADER_ALLOW_LIST
from wire.queued_event import QueuedEvent
from wire.signature import sign
from worker.http_client import HttpClient, Target
from worker.transport_errors import describe_unexpected

Outcome = Literal["success", "http_error", "timeout", "connection_error", "forbidden_address"]

# Enough of a response body to show an operator what went wrong (the delivery
# log keeps this much).
RESPONSE_EXCERPT_BYTES = EXCERPT_BYTES
# Transport errors are cut to this length for logs and DLQ headers.
_ERROR_CHARS = 200


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one attempt. ``status`` is 0 when there was no HTTP response."""

    outcome: Outcome
    status: int
    duration_seconds: float
    error: str | None = None
    response_excerpt: bytes = b""
    retry_after_seconds: float | None = None
    # The answer's allow-listed headers (wire.attempt_record), for the delivery log.
    response_headers: tuple[tuple[str, str], ...] = ()

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
    """Owns the HTTP client and its pool; ``deliver`` never raises for network outcomes."""

    def __init__(
        self,
        *,
        allow_private_networks: bool,
        pool_size: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        keep_headers: bool = False,
    ) -> None:
        # Successful answers' headers only for the delivery log: building them
        # costs each delivery (failures read them anyway, for Retry-After).
        self._keep_headers = keep_headers
        self._allow_private = allow_private_networks
        self._pool_size = pool_size
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._client: HttpClient | None = None

    async def start(self) -> None:
        self._client = HttpClient(
            allow_private_networks=self._allow_private,
            proxy=self._proxy,
            ssl_context=self._ssl_context,
            pool_size=self._pool_size,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Deliverer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def headers_for(
        self, subscriber: AnySubscriber, event: QueuedEvent, *, now_ms: int, test: bool = False
    ) -> dict[str, str]:
        """All HTTP headers of one attempt, signature included."""
        secrets = subscriber.signing_secrets()
        headers = {
            "Content-Type": contract.CONTENT_TYPE,
            "User-Agent": contract.USER_AGENT,
            contract.HTTP_SIGNATURE: sign(secrets, event.body, now_ms),
            contract.HTTP_EVENT: event.event_type,
            contract.HTTP_ATTEMPT: str(event.attempt),
            contract.HTTP_ID: event.event_id,
        }
        if subscriber.standard_webhooks:
            seconds = now_ms // 1000
            headers["webhook-id"] = event.event_id
            headers["webhook-timestamp"] = str(seconds)
            # The specification lists several signatures separated by spaces.
            headers["webhook-signature"] = " ".join(
                standard_webhooks_signature(secret, event.event_id, seconds, event.body)
                for secret in secrets
            )
        if test:
            headers[contract.HTTP_TEST] = "true"
        return headers

    async def deliver(
        self, subscriber: AnySubscriber, event: QueuedEvent, *, test: bool = False
    ) -> DeliveryResult:
        """POST ``event`` to ``subscriber`` once; every outcome is a DeliveryResult."""
        client = self._client
        if client is None:
            raise RuntimeError("Deliverer.start() first")
        try:
            target = client.target(subscriber.url)  # parsed once per URL
        except DeliveryTransportError as exc:
            return DeliveryResult("connection_error", 0, 0.0, str(exc)[:_ERROR_CHARS])
        # Wait for a connection slot here (one of the receiver's origin, then one
        # of the whole pool), holding nothing but this coroutine: with many
        # subscribers thousands of messages can be in flight at once, and only
        # this many requests (and connections) run together. The attempt's
        # timeout starts once it has its slot.
        async with target.slots:
            return await self._attempt(client, target, subscriber, event, test)

    async def _attempt(
        self,
        client: HttpClient,
        target: Target,
        subscriber: AnySubscriber,
        event: QueuedEvent,
        test: bool,
    ) -> DeliveryResult:
        started = time.monotonic()

        def result(
            outcome: Outcome,
            status: int = 0,
            error: str | None = None,
            excerpt: bytes = b"",
            retry_after: float | None = None,
            headers: tuple[tuple[str, str], ...] = (),
        ) -> DeliveryResult:
            return DeliveryResult(
                outcome, status, time.monotonic() - started, error, excerpt, retry_after, headers
            )

        try:
            headers = self.headers_for(
                subscriber, event, now_ms=time.time_ns() // 1_000_000, test=test
            )
            response = await client.post(
                target,
                headers,
                event.body,
                timeout_seconds=subscriber.timeout_seconds,
                connect_timeout_seconds=subscriber.connect_timeout_seconds,
                excerpt_bytes=RESPONSE_EXCERPT_BYTES,
            )
        except TimeoutError:
            return result("timeout", error=f"timed out after {subscriber.timeout_seconds:g} s")
        except ForbiddenAddressError as exc:
            return result("forbidden_address", error=str(exc))
        except DeliveryTransportError as exc:
            return result("connection_error", error=str(exc)[:_ERROR_CHARS])
        except Exception as exc:
            # The client turns its own surprises into DeliveryTransportErrors; this
            # is the last line: an attempt that fails, never a crashed message.
            # (No traceback in the log: messages may quote the URL's path.)
            error = f"unexpected {describe_unexpected(exc, subscriber.url)}"
            return result("connection_error", error=error[:_ERROR_CHARS])
        status = response.status
        if 200 <= status < 300:
            kept = _allowed_headers(response.headers) if self._keep_headers else ()
            return result("success", status, excerpt=response.excerpt, headers=kept)
        error = f"HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed)"
        return result(
            "http_error",
            status,
            error,
            response.excerpt,
            retry_after_seconds(response.headers.get("retry-after")),
            _allowed_headers(response.headers),
        )


def _allowed_headers(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, headers[name]) for name in HEADER_ALLOW_LIST if name in headers)
