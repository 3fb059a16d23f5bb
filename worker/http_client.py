"""The HTTP client that POSTs webhooks: one aiohttp session, hardened for untrusted receivers.

A receiver is someone else's server, so everything it can send is bounded:
the status line, each header and the number of headers (so the whole header
block too), how much of the body is read (an excerpt; the connection is
dropped rather than the rest read), and how long an attempt may take. The
client follows no redirects, keeps no cookies, asks for no compression and
ignores proxy variables in the environment; it goes through a proxy only
when one is configured (``WEBHOOK_EGRESS_PROXY``).

The address policy: names are resolved by ``PublicOnlyResolver`` (the
addresses it lets through are the ones connected to) and IP-literal hosts,
which aiohttp never hands to a resolver, are checked here before the
request. Through a proxy the proxy resolves names, so only literals are
checked here; the proxy must enforce the rest (README, "Egress proxy").

Every failure below HTTP is raised as a ``DeliveryTransportError`` (timeouts
as ``TimeoutError``), including ones nobody foresaw: ``Deliverer`` turns them
into results, so a strange URL or answer is a failed attempt, never a crash.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp.helpers import is_ip_address
from aiohttp.http import RawResponseMessage
from yarl import URL

from config.errors import DeliveryTransportError, ForbiddenAddressError
from worker.address_policy import is_public_address
from worker.public_resolver import PublicOnlyResolver
from worker.transport_errors import describe_client_error, describe_unexpected

# How long an idle keep-alive connection is kept (aiohttp's default too).
IDLE_SECONDS = 15.0
DNS_TTL_SECONDS = 60
# At most this many connections (and requests at once) to one scheme://host:port.
CONNECTIONS_PER_ORIGIN = 64
# With several addresses for a name, the next is tried after this long (RFC 8305).
HAPPY_EYEBALLS_DELAY = 0.25
# Limits on an answer's head. aiohttp has no byte cap on the whole header
# block, so the block is bounded by MAX_HEADERS x MAX_FIELD_BYTES (~800 KiB):
# anything bigger is refused after at most that much is read.
MAX_STATUS_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190  # one header, name and value
MAX_HEADERS = 100
# A keep-alive connection the server closed as we sent on it is retried on
# another; a fresh connection failing is an answer (aiohttp retries only
# idempotent methods, never a POST).
_STALE_RETRIES = 2

# Set by the connector for the task that asked: was its connection used before?
_reused: ContextVar[bool] = ContextVar("webhook_connection_reused", default=False)
# Marks a connection (aiohttp's protocol object) once it has carried a request.
_USED = "_webhook_relay_used"


class Response:
    """What an attempt got back: status, headers (lower-case names) and a body excerpt."""

    def __init__(self, status: int, raw_headers: Mapping[str, str], excerpt: bytes) -> None:
        self.status = status
        self._raw_headers = raw_headers
        self.excerpt = excerpt

    @cached_property
    def headers(self) -> dict[str, str]:
        """Lower-case names; a repeated header is one comma-separated list (RFC 9110, 5.3).

        Built on first use: a successful delivery never looks at them.
        """
        joined: dict[str, str] = {}
        for name, value in self._raw_headers.items():
            key = name.lower()
            previous = joined.get(key)
            joined[key] = value if previous is None else f"{previous}, {value}"
        return joined


class _Slots:
    """Waits for a slot of the target's origin, then one of the whole pool."""

    __slots__ = ("_origin", "_pool")

    def __init__(self, origin: asyncio.Semaphore, pool: asyncio.Semaphore) -> None:
        self._origin = origin
        self._pool = pool

    async def __aenter__(self) -> None:
        # The origin first: requests queued behind one slow receiver must not
        # hold slots of the shared pool while they wait.
        await self._origin.acquire()
        try:
            await self._pool.acquire()
        except BaseException:
            self._origin.release()
            raise

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._pool.release()
        self._origin.release()


@dataclass(frozen=True)
class Target:
    """A subscriber URL taken apart once: the yarl URL, the policy verdict, the slots."""

    url: URL
    forbidden: str | None  # why the policy refuses this IP literal; None otherwise
    slots: _Slots


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that tells the task asking whether its connection was used before."""

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        # An attribute of our own on aiohttp's protocol object: cheaper per
        # request than a WeakSet lookup, and gone with the connection.
        if getattr(protocol, _USED, False):
            _reused.set(True)
        elif protocol is not None:
            setattr(protocol, _USED, True)
        return connection


class HttpClient:
    """POSTs over pooled keep-alive connections to addresses the policy allows."""

    def __init__(
        self,
        *,
        allow_private_networks: bool,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 256,
    ) -> None:
        self._allow_private = allow_private_networks
        resolver = None if allow_private_networks or proxy else PublicOnlyResolver()
        connector = _Connector(
            limit=pool_size,
            limit_per_host=CONNECTIONS_PER_ORIGIN,
            keepalive_timeout=IDLE_SECONDS,
            ttl_dns_cache=DNS_TTL_SECONDS,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            resolver=resolver,
            ssl=ssl_context if ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            proxy=proxy,
            trust_env=False,  # no HTTP(S)_PROXY from the environment around the policy
            cookie_jar=aiohttp.DummyCookieJar(),
            # Only the headers the caller gives (and Host, Content-Length): no
            # compressed answers, which would be decompressed to make an excerpt.
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            auto_decompress=False,
            max_line_size=MAX_STATUS_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
        )
        self._pool = asyncio.Semaphore(pool_size)
        self._origins: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._targets: dict[str, Target] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def target(self, url: str) -> Target:
        """``url`` parsed once (raises DeliveryTransportError if no request can be made to it)."""
        found = self._targets.get(url)
        if found is not None:
            return found
        try:
            # yarl percent-encodes the path and query (UTF-8, as browsers do) and
            # IDNA-encodes the host; it raises on a host IDNA cannot encode.
            parsed = URL(url)
            host = parsed.raw_host
            port = parsed.port
        except (ValueError, TypeError) as exc:  # UnicodeError is a ValueError
            raise DeliveryTransportError(f"invalid URL: {describe_unexpected(exc, url)}") from exc
        if not host or port is None or parsed.scheme not in ("http", "https"):
            raise DeliveryTransportError("invalid URL: not http(s)://host/...")
        forbidden = None
        # aiohttp's own test for "this host is an address, skip the resolver".
        if not self._allow_private and is_ip_address(host) and not is_public_address(host):
            forbidden = f"{host} is not a public address"
        origin = (parsed.scheme, host, port)
        slots = self._origins.get(origin)
        if slots is None:
            slots = self._origins[origin] = asyncio.Semaphore(CONNECTIONS_PER_ORIGIN)
        target = self._targets[url] = Target(parsed, forbidden, _Slots(slots, self._pool))
        return target

    async def post(
        self,
        target: Target,
        headers: dict[str, str],
        body: bytes,
        *,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        excerpt_bytes: int,
    ) -> Response:
        """POST ``body`` with ``headers``; read at most ``excerpt_bytes`` of the answer.

        Raises ForbiddenAddressError, TimeoutError, or another DeliveryTransportError.
        """
        if target.forbidden is not None:
            raise ForbiddenAddressError(target.forbidden)
        timeout = self._timeout(timeout_seconds, connect_timeout_seconds)
        # Content-Length before the caller's headers (aiohttp would append it
        # last): the head is Host, Content-Length, then exactly what was given.
        headers = {"Content-Length": str(len(body)), **headers}
        try:
            response = await self._send(target, headers, body, timeout)
            try:
                excerpt = await _read_excerpt(response.content, excerpt_bytes)
            except BaseException:
                response.close()
                raise
            if response.content.is_eof():
                response.release()  # the whole answer is in: the connection may be reused
            else:
                response.close()  # hang up rather than wait for (or read) the rest
            return Response(response.status, response.headers, excerpt)
        except (ForbiddenAddressError, TimeoutError):
            raise
        except aiohttp.ClientError as exc:
            raise describe_client_error(exc, str(target.url)) from exc
        except Exception as exc:
            # Nothing foreseen gets here; if something does, it is this attempt's
            # failure, not the worker's.
            raise DeliveryTransportError(
                f"unexpected {describe_unexpected(exc, str(target.url))}"
            ) from exc

    async def _send(
        self,
        target: Target,
        headers: dict[str, str],
        body: bytes,
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        for retry in range(_STALE_RETRIES + 1):
            if _reused.get():
                _reused.set(False)  # (a set costs more than a get: only when needed)
            try:
                return await self._session.post(
                    target.url, data=body, headers=headers, timeout=limits, allow_redirects=False
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if retry == _STALE_RETRIES or not _reused.get() or not _before_any_answer(exc):
                    raise
        raise AssertionError("unreachable")

    def _timeout(self, total: float, connect: float) -> aiohttp.ClientTimeout:
        key = (total, connect)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # ``connect`` covers resolving, every address tried and the TLS handshake.
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=total, connect=min(connect, total)
            )
        return timeout

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        await self._session.close()


def _before_any_answer(exc: aiohttp.ClientError) -> bool:
    """Whether the server hung up before any byte of its answer (safe to send again)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False  # never connected: not a stale keep-alive connection
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return not isinstance(exc.message, RawResponseMessage)  # else: part of a head
    return True


async def _read_excerpt(content: aiohttp.StreamReader, limit: int) -> bytes:
    if content.is_eof():
        # The usual case: a short answer arrived whole with its head.
        return content.read_nowait(limit)
    excerpt = await content.read(limit)
    while excerpt and len(excerpt) < limit and not content.at_eof():
        more = await content.read(limit - len(excerpt))
        if not more:
            break
        excerpt += more
    return excerpt
