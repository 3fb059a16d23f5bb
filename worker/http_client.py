"""The HTTP/1.1 client that POSTs webhooks: a keep-alive pool around llhttp.

Why not aiohttp's client: a webhook attempt is always the same small thing (one
POST with a body of known length, no redirects, no cookies, no proxies, no
compression, and only the status, the headers and the first few hundred bytes
of the answer matter), and aiohttp's general-purpose request machinery cost
~270 µs of CPU per request here, nearly half of what a whole delivery may cost
to reach the throughput target (docs/performance.md).  This client does the
same job in ~60-110 µs: requests are written as one buffer, responses are
parsed by ``httptools`` (llhttp, the parser node.js uses), TLS and sockets are
asyncio's.

What it deliberately does *not* do: follow redirects, send or keep cookies,
use proxies from the environment, ask for compressed answers, or read more of
a response body than the caller wants (a connection whose answer was not read
to its end is closed rather than reused).

Every connection goes to an address that ``address_policy`` allows: names are
resolved here and the non-public answers dropped before connecting, so a
public name resolving to 127.0.0.1 is refused like the literal address.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from config.errors import (
    ConnectError,
    ConnectionClosedError,
    ForbiddenAddressError,
    InvalidResponseError,
)
from worker.address_policy import is_public_address

# How long an idle keep-alive connection is kept (aiohttp's default too). Most
# servers close theirs sooner (node: 5 s); that close is noticed and the
# connection dropped from the pool before it could be reused.
IDLE_SECONDS = 15.0
# Resolved addresses are reused this long (aiohttp's ttl_dns_cache was 60 s).
DNS_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class Response:
    """What an attempt got back: status, headers (lower-case names) and a body excerpt."""

    status: int
    headers: dict[str, str]
    excerpt: bytes


@dataclass(frozen=True)
class Target:
    """A URL taken apart once: where to connect and what to put on the request line."""

    scheme: str
    host: str  # for DNS and TLS (IDNA-encoded, no brackets)
    port: int
    head_prefix: bytes  # b"POST /path?query HTTP/1.1\r\nHost: ...\r\n"

    @property
    def key(self) -> tuple[str, str, int]:
        """Which pool of idle connections serves this target."""
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        try:
            host.encode("ascii")
        except UnicodeEncodeError:
            host = host.encode("idna").decode("ascii")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if any(c in path for c in " \r\n"):
            raise ValueError("URL path contains whitespace")
        prefix = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
        return cls(parts.scheme, host, port, prefix)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the answer to the request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._excerpt_limit = 0
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._excerpt = bytearray()
        self._headers_done = False
        self.reusable = False
        self.got_bytes = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for (or after an answer we stopped reading):
            # the connection's state is unknown, so it must not be reused.
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidResponseError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponseError(f"invalid HTTP response: {exc}"))
        else:
            if self._headers_done and len(self._excerpt) >= self._excerpt_limit:
                # The excerpt is full and the rest of the body has not arrived
                # with it: answer now and hang up rather than wait for (or
                # read) a body of unknown size.
                self._finish(reusable=False)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._parser.should_keep_alive():
            # A body delimited by the end of the connection (no length, not chunked).
            self._finish(reusable=False)
        elif exc is not None:
            waiter.set_exception(ConnectionClosedError(f"connection lost: {exc}", self.got_bytes))
        else:
            waiter.set_exception(
                ConnectionClosedError("server closed the connection", self.got_bytes)
            )

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        # A repeated header is one comma-separated list (RFC 9110, 5.3).
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return  # an interim 1xx answer; the real one follows
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self._headers_done:
            return
        room = self._excerpt_limit - len(self._excerpt)
        if room > 0:
            self._excerpt += body[:room]

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            self._headers = {}
            return
        self._finish(reusable=self._parser.should_keep_alive())

    # --- used by the pool

    def _finish(self, *, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self.reusable = reusable and not self.closed
            waiter.set_result(
                Response(self._parser.get_status_code(), self._headers, bytes(self._excerpt))
            )

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    async def request(self, data: bytes, excerpt_bytes: int) -> Response:
        """Send one complete request and wait for its answer (or enough of it)."""
        assert self.transport is not None
        self._reset()
        self._excerpt_limit = excerpt_bytes
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class HttpClient:
    """POSTs over pooled keep-alive connections to addresses the policy allows."""

    def __init__(
        self,
        *,
        allow_private_networks: bool,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allow_private = allow_private_networks
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._closed = False
        self._swept_at = time.monotonic()

    async def post(
        self,
        target: Target,
        headers: bytes,
        body: bytes,
        *,
        connect_timeout: float,
        excerpt_bytes: int,
    ) -> Response:
        """POST ``body`` with ``headers`` (pre-encoded ``Name: value\\r\\n`` lines).

        Raises ForbiddenAddressError, ConnectError, ConnectionClosedError,
        InvalidResponseError; the caller bounds the whole call with a timeout.
        """
        data = b"".join(
            (target.head_prefix, b"Content-Length: %d\r\n" % len(body), headers, b"\r\n", body)
        )
        connection = self._take_idle(target.key)
        if connection is not None:
            try:
                return await self._exchange(target, connection, data, excerpt_bytes)
            except ConnectionClosedError as exc:
                if exc.got_bytes:
                    raise
                # The server closed an idle keep-alive connection just as we sent
                # on it (the answer never started): try once on a fresh one.
        connection = await self._connect(target, connect_timeout)
        return await self._exchange(target, connection, data, excerpt_bytes)

    async def _exchange(
        self, target: Target, connection: _Connection, data: bytes, excerpt_bytes: int
    ) -> Response:
        self._busy.add(connection)
        try:
            response = await connection.request(data, excerpt_bytes)
        except BaseException:
            # Timeouts and cancellation included: a half-done exchange leaves the
            # connection in an unknown state.
            connection.close()
            raise
        finally:
            self._busy.discard(connection)
        if connection.reusable and not connection.closed and not self._closed:
            connection.idle_since = now = time.monotonic()
            self._idle.setdefault(target.key, deque()).append(connection)
            if now - self._swept_at > IDLE_SECONDS:
                self._sweep(now)
        else:
            connection.close()
        return response

    def _sweep(self, now: float) -> None:
        """Close connections idle too long everywhere, including origins no longer posted to."""
        self._swept_at = now
        for key, idle in list(self._idle.items()):
            _drop_stale(idle, now)
            if not idle:
                del self._idle[key]

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        _drop_stale(idle, time.monotonic())  # from the old end, while we are here
        while idle:
            connection = idle.pop()  # the most recently used is the most likely alive
            if not connection.closed:
                return connection
        return None

    async def _connect(self, target: Target, limit_seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = target.scheme == "https"
        last_error: OSError | None = None
        async with asyncio.timeout(limit_seconds):
            for address in await self._resolve(target.host, target.port):
                try:
                    _, connection = await loop.create_connection(
                        _Connection,
                        address,
                        target.port,
                        ssl=self._ssl if tls else None,
                        server_hostname=target.host if tls else None,
                    )
                except OSError as exc:  # ssl.SSLError and refused/unreachable alike
                    last_error = exc
                    continue
                connection.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
                return connection
        assert last_error is not None
        raise ConnectError(_describe_os_error(last_error)) from last_error

    async def _resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self._allow_private:
            addresses = [a for a in addresses if is_public_address(a)]
            if not addresses:
                raise ForbiddenAddressError(
                    f"{host} resolves only to non-public addresses "
                    "(set security.allow_private_networks to allow)"
                    if not _is_literal(host)
                    else f"{host} is not a public address"
                )
        self._dns[(host, port)] = (now + DNS_TTL_SECONDS, addresses)
        return addresses

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        # Let the transports run their close callbacks before the loop goes away.
        await asyncio.sleep(0)


def _drop_stale(idle: deque[_Connection], now: float) -> None:
    """Close the oldest idle connections while they are closed already or idle too long."""
    while idle and (idle[0].closed or now - idle[0].idle_since > IDLE_SECONDS):
        idle.popleft().close()


def _is_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc.strerror or exc}"
