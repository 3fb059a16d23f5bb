"""What the webhook HTTP client refuses to do for a receiver, and the address policy's resolver."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from config.errors import ForbiddenAddressError, InvalidResponseError
from tests.unit.test_http_client import OK, Server, client_for, keep_alive, post, serving
from worker.http_client import MAX_FIELD_BYTES, MAX_HEADERS, MAX_STATUS_LINE_BYTES
from worker.public_resolver import PublicOnlyResolver


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (
            b"HTTP/1.1 200 " + b"O" * (MAX_STATUS_LINE_BYTES + 1) + b"\r\n",
            f"a status line or header over {MAX_STATUS_LINE_BYTES} bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * MAX_FIELD_BYTES + b"\r\n",
            f"a status line or header over {MAX_FIELD_BYTES} bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)),
            "Too many headers",
        ),
    ],
    ids=["status line", "one header", "header count"],
)
async def test_an_answer_head_over_a_limit_is_an_invalid_response(
    head: bytes, message: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await ref[0].read_request(reader)
        writer.write(head + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        with pytest.raises(InvalidResponseError, match=message):
            await post(client, f"http://127.0.0.1:{server.port}/")


async def test_a_head_within_the_limits_is_read() -> None:
    ref: list[Server] = []
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    answer = b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 2\r\n\r\nok"
    async with serving(keep_alive(ref, answer)) as server, client_for() as client:
        ref.append(server)
        response = await post(client, f"http://127.0.0.1:{server.port}/")
    assert (response.status, len(response.headers)) == (200, MAX_HEADERS)


async def test_a_whole_answer_longer_than_the_excerpt_keeps_its_connection() -> None:
    ref: list[Server] = []
    answer = b"HTTP/1.1 500 Oops\r\nContent-Length: 2000\r\n\r\n" + b"e" * 2000
    async with serving(keep_alive(ref, answer)) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        first = await post(client, url)
        await post(client, url)
    assert (first.status, first.excerpt) == (500, b"e" * 512)
    assert server.connections == 1


async def test_redirects_are_answers_and_cookies_are_never_sent_back() -> None:
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nSet-Cookie: session=abc; Path=/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await ref[0].read_request(reader)
        writer.write(redirect)
        await ref[0].read_request(reader)
        writer.write(OK)
        await writer.drain()

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/hook"
        first = await post(client, url)
        second = await post(client, url)
    assert (first.status, second.status) == (302, 200)
    assert [r.split(b" ", 2)[1] for r in server.requests] == [b"/hook", b"/hook"]
    assert b"cookie" not in server.requests[1].lower()


class _Answers(AbstractResolver):
    """A resolver that answers every name with the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_every_address_a_name_resolves_to_is_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there: refused, then the next.
    answers = _Answers("127.0.0.2", "127.0.0.1")
    monkeypatch.setattr("aiohttp.connector.DefaultResolver", lambda **_kw: answers)
    ref: list[Server] = []
    async with serving(keep_alive(ref)) as server, client_for() as client:
        ref.append(server)
        response = await post(client, f"http://receiver.test:{server.port}/")
    assert response.status == 200


async def test_requests_to_one_origin_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.http_client.CONNECTIONS_PER_ORIGIN", 2)
    open_now = 0
    most = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                await ref[0].read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(OK)
                await writer.drain()
        finally:
            open_now -= 1

    ref: list[Server] = []
    async with serving(handler) as server, client_for() as client:
        ref.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        responses = await asyncio.gather(*(post(client, url) for _ in range(6)))
    assert [r.status for r in responses] == [200] * 6
    assert most == 2 and server.connections == 2


async def test_the_resolver_keeps_only_public_addresses() -> None:
    mixed = PublicOnlyResolver(_Answers("10.0.0.7", "93.184.216.34", "::1", "2606:4700::1111"))
    answers: list[Any] = await mixed.resolve("shop.example", 443, socket.AF_UNSPEC)
    assert [a["host"] for a in answers] == ["93.184.216.34", "2606:4700::1111"]
    private = PublicOnlyResolver(_Answers("169.254.169.254", "::ffff:127.0.0.1"))
    with pytest.raises(ForbiddenAddressError, match=r"shop\.example resolves only to non-public"):
        await private.resolve("shop.example", 443)
