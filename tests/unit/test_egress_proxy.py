"""Deliveries through an egress proxy (WEBHOOK_EGRESS_PROXY): what goes where, what is checked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trustme

from config.errors import ConnectError, ForbiddenAddressError
from tests.unit.test_http_client import Server, keep_alive, post, serving
from worker.http_client import HttpClient

CREDENTIALS = "relay:proxy-pw"


class Proxy:
    """A forward proxy that sends every target, whatever its name, to 127.0.0.1.

    So a name that resolves nowhere still reaches the test's receiver: proof that
    the worker left resolving (and the address policy) to the proxy.
    """

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if self.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            if method == b"CONNECT":
                port = int(target.rsplit(b":", 1)[1])
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = b""
            else:  # absolute form: http://host:port/path
                port = int(target.split(b"/")[2].rsplit(b":", 1)[1])
                first = head
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            sink.close()


@asynccontextmanager
async def proxying(proxy: Proxy) -> AsyncIterator[str]:
    listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://{CREDENTIALS}@127.0.0.1:{proxy.port}"
    finally:
        listener.close()


def _proxy_authorization() -> bytes:
    return b"Proxy-Authorization: Basic " + base64.b64encode(CREDENTIALS.encode())


async def test_https_goes_through_connect_and_the_name_is_resolved_by_the_proxy() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("receiver.test").configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    ref: list[Server] = []
    proxy = Proxy()
    async with serving(keep_alive(ref), server_context) as server, proxying(proxy) as proxy_url:
        ref.append(server)
        # The policy is on, and the proxy itself is on loopback: its address is
        # not a delivery target, so it is not checked.
        client = HttpClient(allow_private_networks=False, proxy=proxy_url, ssl_context=trusting)
        try:
            url = f"https://receiver.test:{server.port}/hook"
            first = await post(client, url)
            second = await post(client, url)
        finally:
            await client.close()
    assert (first.status, second.status) == (200, 200)
    [head] = proxy.heads  # one tunnel, kept alive for the second request
    assert head.startswith(f"CONNECT receiver.test:{server.port} HTTP/1.1\r\n".encode())
    assert _proxy_authorization() in head
    assert server.requests[0].startswith(b"POST /hook HTTP/1.1\r\n")


async def test_plain_http_is_sent_to_the_proxy_in_absolute_form() -> None:
    ref: list[Server] = []
    proxy = Proxy()
    async with serving(keep_alive(ref)) as server, proxying(proxy) as proxy_url:
        ref.append(server)
        client = HttpClient(allow_private_networks=False, proxy=proxy_url)
        try:
            response = await post(client, f"http://receiver.test:{server.port}/hook?x=1")
        finally:
            await client.close()
    assert response.status == 200
    [head] = proxy.heads
    assert head.startswith(f"POST http://receiver.test:{server.port}/hook?x=1 HTTP/1.1".encode())


@pytest.mark.parametrize("host", ["127.0.0.1:9", "[::1]:9", "169.254.169.254", "10.1.2.3"])
async def test_private_ip_literals_are_still_refused_before_the_proxy(host: str) -> None:
    proxy = Proxy()
    async with proxying(proxy) as proxy_url:
        client = HttpClient(allow_private_networks=False, proxy=proxy_url)
        try:
            with pytest.raises(ForbiddenAddressError, match="is not a public address"):
                await post(client, f"http://{host}/hook")
        finally:
            await client.close()
    assert proxy.heads == []


async def test_a_proxy_refusing_the_target_is_a_connect_error() -> None:
    proxy = Proxy(refuse=True)
    async with proxying(proxy) as proxy_url:
        client = HttpClient(allow_private_networks=False, proxy=proxy_url)
        try:
            with pytest.raises(ConnectError, match="egress proxy refused the connection: HTTP 403"):
                await post(client, "https://internal.test/hook")
        finally:
            await client.close()
    assert len(proxy.heads) == 1
