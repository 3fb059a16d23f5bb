"""The webhook HTTP client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from config.errors import (
    ConnectError,
    ConnectionClosedError,
    DeliveryTransportError,
    ForbiddenAddressError,
    InvalidResponseError,
)
from worker.http_client import HttpClient, Response

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
HEADERS = {"Content-Type": "application/json", "X-Webhook-Event": "order.created"}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A loopback TCP server; ``handler`` gets each connection and its number."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@asynccontextmanager
async def serving(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def keep_alive(server_ref: list[Server], answer: bytes = OK) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            await server_ref[0].read_request(reader)
            writer.write(answer)
            await writer.drain()

    return handler


async def post(client: HttpClient, url: str, body: bytes = b'{"a":1}') -> Response:
    return await client.post(
        client.target(url),
        HEADERS,
        body,
        timeout_seconds=5,
        connect_timeout_seconds=2,
        excerpt_bytes=512,
    )


@asynccontextmanager
async def client_for(**kwargs: object) -> AsyncIterator[HttpClient]:
    client = HttpClient(allow_private_networks=True, **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.close()


async def test_keep_alive_reuses_one_connection_and_writes_a_plain_request() -> None:
    ref: list[Server] = []
    async with serving(keep_alive(ref)) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/hooks/a?x=1"
        first = await post(client, url)
        second = await post(client, url, b'{"b":2}')
    assert (first.status, first.excerpt, second.excerpt) == (200, b"ok", b"ok")
    assert first.headers == {"content-length": "2"}
    assert server.connections == 1
    assert server.requests[0] == (
        b"POST /hooks/a?x=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Content-Length: 7\r\n"
        + b"Content-Type: application/json\r\nX-Webhook-Event: order.created\r\n\r\n"
        + b'{"a":1}'
    )
    assert server.requests[1].endswith(b'\r\n\r\n{"b":2}')


async def test_connection_close_chunked_and_until_eof_answers() -> None:
    answers = [
        b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nConnection: close\r\n"
        b"Content-Length: 4\r\n\r\nbusy",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.0 202 Accepted\r\n\r\nuntil the end",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        ref[0].requests.append(await reader.readuntil(b'{"a":1}'))
        writer.write(answers[n - 1])
        await writer.drain()
        if n != 2:
            return  # closes: the first said so, the third's body runs to the end
        await ref[0].read_request(reader)  # the chunked answer left it reusable
        writer.write(answers[2])

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        busy = await post(client, url)
        chunked = await post(client, url)
        until_eof = await post(client, url)
    assert (busy.status, busy.headers["retry-after"], busy.excerpt) == (503, "7", b"busy")
    assert (chunked.status, chunked.excerpt) == (200, b"abcde")
    assert (until_eof.status, until_eof.excerpt) == (202, b"until the end")
    assert server.connections == 2  # the close was honoured; the chunked one was reused


async def test_a_huge_body_is_cut_to_the_excerpt_and_the_connection_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await ref[0].read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n" + b"x" * 4096)
        await writer.drain()
        await asyncio.sleep(10)  # the rest never comes

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        response = await post(client, url)
        await post(client, url)
    assert response.status == 200
    assert response.excerpt == b"x" * 512
    assert server.connections == 2


async def test_an_interim_1xx_answer_is_skipped() -> None:
    ref: list[Server] = []
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with serving(keep_alive(ref, answer)) as server, client_for() as client:
        ref.append(server)
        response = await post(client, f"http://127.0.0.1:{server.port}/")
    assert (response.status, response.excerpt) == (200, b"ok")


async def test_a_keep_alive_connection_closed_by_the_server_is_retried_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await ref[0].read_request(reader)
        writer.write(OK)
        await writer.drain()
        if n == 1:
            # Like a server whose idle timeout fires as the next request arrives:
            # it reads nothing more and hangs up without answering.
            await ref[0].read_request(reader)

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        await post(client, url)
        response = await post(client, url)
    assert response.status == 200
    assert server.connections == 2
    assert len(server.requests) == 3  # the lost one, then its retry


async def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, _w: asyncio.StreamWriter, _n: int) -> None:
        await ref[0].read_request(reader)

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        with pytest.raises(ConnectionClosedError):
            await post(client, f"http://127.0.0.1:{server.port}/")
    assert server.connections == 1  # no retry on a connection that was new


async def test_a_closed_half_answer_and_garbage_are_errors() -> None:
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"SMTP ready\r\n\r\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await ref[0].read_request(reader)
        writer.write(answers[n - 1])
        await writer.drain()

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(ConnectionClosedError):
            await post(client, url)
        with pytest.raises(InvalidResponseError, match="invalid HTTP response"):
            await post(client, url)


async def test_a_timed_out_request_never_returns_its_connection_to_the_pool() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await ref[0].read_request(reader)
        if n == 1:
            await asyncio.sleep(1)  # answers too late
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(1)

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        target = client.target(f"http://127.0.0.1:{server.port}/")
        with pytest.raises(TimeoutError):
            await client.post(
                target,
                HEADERS,
                b"{}",
                timeout_seconds=0.2,
                connect_timeout_seconds=1,
                excerpt_bytes=10,
            )
        response = await post(client, f"http://127.0.0.1:{server.port}/")
    assert response.status == 200
    assert server.connections == 2  # the late answer could not be mistaken for this one


async def test_refused_and_unresolvable_are_connect_errors(unused_tcp_port: int) -> None:
    async with client_for() as client:
        with pytest.raises(ConnectError, match="ConnectionRefusedError"):
            await post(client, f"http://127.0.0.1:{unused_tcp_port}/")
        with pytest.raises(ConnectError, match="cannot resolve"):
            await post(client, "http://no-such-host.invalid/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/", "127.0.0.1 is not a public address"),
        ("http://[::1]:9/", "::1 is not a public address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is not a public address"),
        ("http://localhost:9/", "localhost resolves only to non-public addresses"),
    ],
)
async def test_private_targets_are_refused_before_connecting(url: str, message: str) -> None:
    client = HttpClient(allow_private_networks=False)
    try:
        with pytest.raises(ForbiddenAddressError, match=message):
            await post(client, url)
    finally:
        await client.close()


async def test_tls_verifies_the_certificate_and_the_name() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    ref: list[Server] = []
    async with serving(keep_alive(ref), server_context) as server:
        ref.append(server)
        url = f"https://127.0.0.1:{server.port}/hook"
        async with client_for(ssl_context=trusting) as client:
            response = await post(client, url)
            await post(client, url)
        assert response.status == 200
        assert server.connections == 1
        async with client_for() as untrusting:  # the system's trust store
            with pytest.raises(ConnectError, match="TLS error: CERTIFICATE_VERIFY_FAILED"):
                await post(untrusting, url)


@pytest.mark.parametrize(
    ("url", "host_line", "origin"),
    [
        ("https://shop.example/hook", "shop.example", ("https", "shop.example", 443)),
        ("http://shop.example:8080", "shop.example:8080", ("http", "shop.example", 8080)),
        ("http://[2001:db8::1]:81/h", "[2001:db8::1]:81", ("http", "2001:db8::1", 81)),
        (
            "https://bücher.example/",
            "xn--bcher-kva.example",
            ("https", "xn--bcher-kva.example", 443),
        ),
    ],
)
async def test_targets_take_the_url_apart_once(
    url: str, host_line: str, origin: tuple[str, str, int]
) -> None:
    async with client_for() as client:
        target = client.target(url)
        assert client.target(url) is target
    assert (target.url.scheme, target.url.raw_host, target.url.port) == origin
    assert target.url.host_port_subcomponent == host_line  # aiohttp's Host header


async def test_header_values_cannot_smuggle_a_line_break() -> None:
    ref: list[Server] = []
    async with serving(keep_alive(ref)) as server, client_for() as client:
        ref.append(server)
        target = client.target(f"http://127.0.0.1:{server.port}/")
        with pytest.raises(DeliveryTransportError, match="control character"):
            await client.post(
                target,
                {"X-Webhook-Event": "order.created\r\nX-Evil: 1"},
                b"{}",
                timeout_seconds=2,
                connect_timeout_seconds=1,
                excerpt_bytes=10,
            )
    assert server.requests == []


async def test_repeated_answer_headers_are_joined() -> None:
    ref: list[Server] = []
    answer = b"HTTP/1.1 200 OK\r\nVia: a\r\nVia: b\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"
    async with serving(keep_alive(ref, answer)) as server, client_for() as client:
        ref.append(server)
        response = await post(client, f"http://127.0.0.1:{server.port}/")
    assert response.headers == {"via": "a, b", "x-empty": "", "content-length": "0"}


async def test_connections_idle_too_long_are_closed_even_for_quiet_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.http_client.IDLE_SECONDS", 0.05)
    hung_up = asyncio.Event()

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await quiet_ref[0].read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed the idle connection
        hung_up.set()

    quiet_ref: list[Server] = []
    busy_ref: list[Server] = []
    async with (
        serving(quiet) as quiet_server,
        serving(keep_alive(busy_ref)) as busy_server,
        client_for() as client,
    ):
        quiet_ref.append(quiet_server)
        busy_ref.append(busy_server)
        await post(client, f"http://127.0.0.1:{quiet_server.port}/")
        await asyncio.sleep(0.1)
        await post(client, f"http://127.0.0.1:{busy_server.port}/")  # sweeps while here
        async with asyncio.timeout(2):
            await hung_up.wait()
