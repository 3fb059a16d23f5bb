"""Regression tests for receivers and URLs that used to crash or stall the worker.

Fault 2: a URL that passes the config check (a non-ASCII path, a space in the
path) or one that never went through it (a host IDNA cannot encode) raised
inside the HTTP client, outside the delivery's error handling: the message
crash-looped until the broker's delivery limit dead-lettered it. Fault 3: a
receiver streaming a huge response header made each attempt read and parse all
of it, stalling the event loop for seconds and leaving the RSS high.

Everything here goes through ``Deliverer.deliver``, the worker's only way to
make an attempt, so it holds whatever client sits underneath.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from pydantic import ValidationError

from config.errors import InvalidInputError
from config.subscribers import Subscriber
from control.store.models import EndpointInput
from wire.queued_event import QueuedEvent
from worker.delivery import Deliverer

BODY = b'{"event":"order.created","data":{"id":"1"},"timestamp":"2026-01-31T10:30:01.234Z"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# A host whose one label is 64 letters once punycoded: no DNS name can carry it.
UNENCODABLE_HOST = "\u00fc" * 64 + ".example"


def _subscriber(url: str, **extra: object) -> Subscriber:
    return Subscriber.model_validate(
        {
            "id": "s",
            "account": "acme",
            "url": url,
            "secret": "s3cret-value",
            "events": ["order.*"],
            **extra,
        }
    )


def _event(event_type: str = "order.created") -> QueuedEvent:
    return QueuedEvent("evt_1", event_type, 1, BODY, None, None, account="acme")


@asynccontextmanager
async def _recording_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A keep-alive server answering 200 to every request; yields its port and request lines."""
    lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines.append(head.split(b"\r\n", 1)[0])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(OK)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], lines
    finally:
        server.close()


@asynccontextmanager
async def _deliverer() -> AsyncIterator[Deliverer]:
    async with Deliverer(allow_private_networks=True) as deliverer:
        yield deliverer


# --- fault 2 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "request_target"),
    [
        ("/hooks/caf\u00e9", b"/hooks/caf%C3%A9"),  # UTF-8, then percent-encoded
        ("/hooks/a b", b"/hooks/a%20b"),
        ("/hooks/caf\u00e9?shop=a b", b"/hooks/caf%C3%A9?shop=a+b"),
    ],
)
async def test_paths_that_pass_the_config_check_are_percent_encoded_and_delivered(
    path: str, request_target: bytes
) -> None:
    async with _recording_server() as (port, lines), _deliverer() as deliverer:
        subscriber = _subscriber(f"http://127.0.0.1:{port}{path}")  # the config check passes
        result = await deliverer.deliver(subscriber, _event())
    assert (result.outcome, result.status) == ("success", 200)
    assert lines == [b"POST " + request_target + b" HTTP/1.1"]


@pytest.mark.parametrize("host", [UNENCODABLE_HOST, "a\u200db.example", "\ufffd.example"])
def test_a_host_idna_cannot_encode_is_refused_by_the_config_check(host: str) -> None:
    url = f"https://{host}/hook?token=secret-token"
    with pytest.raises(ValidationError) as caught:
        _subscriber(url)
    [problem] = caught.value.errors()
    assert "cannot be encoded as a DNS name" in problem["msg"]
    assert "secret-token" not in problem["msg"]  # names the host, never the path or query
    # The endpoint store's input shares the rule (and its message).
    with pytest.raises(InvalidInputError, match=r"url: .*cannot be encoded as a DNS name"):
        EndpointInput.parse({"url": url, "events": ["order.*"]})


@pytest.mark.parametrize(
    ("url", "event_type"),
    [
        # Never went through the config check (an older file, a store row).
        (f"https://{UNENCODABLE_HOST}/hook", "order.created"),
        # A header value no HTTP client will send (read_event refuses these).
        ("http://127.0.0.1:9/hook", "order.created\r\nX-Evil: 1"),
    ],
)
async def test_anything_unforeseen_in_the_client_is_a_failed_attempt(
    url: str, event_type: str
) -> None:
    subscriber = _subscriber("https://shop.example/hook").model_copy(update={"url": url})
    async with _deliverer() as deliverer:
        result = await deliverer.deliver(subscriber, _event(event_type))
    assert result.outcome == "connection_error"
    assert result.status == 0
    assert result.error and len(result.error) <= 200


# --- fault 3 -----------------------------------------------------------------------


HUGE_HEADER_BYTES = 20 * 1024 * 1024  # the receiver gives up after this much


@contextmanager
def _huge_header_server() -> Iterator[tuple[int, list[int]]]:
    """Answers with a header that goes on for 20 MB, from a thread of its own.

    A thread with blocking sockets, so that the event loop under test does no work
    for the server: any stall measured there is the client's.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[int] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # closed before anyone connected
        total = 0
        with connection:
            connection.settimeout(20)
            try:
                connection.recv(65536)  # the request (small; one read is enough here)
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: ")
                chunk = b"a" * 65536
                while total < HUGE_HEADER_BYTES:
                    connection.sendall(chunk)
                    total += len(chunk)
            except OSError:
                pass  # the client hung up, as it should
        sent.append(total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], sent
    finally:
        listener.close()
        thread.join(25)


def _peak_rss_kib() -> int:
    """VmHWM, the peak resident set since the last reset (see _reset_peak_rss)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


async def test_a_huge_response_header_fails_fast_without_stalling_or_growing() -> None:
    async with _recording_server() as (healthy_port, _lines), _deliverer() as deliverer:
        healthy = _subscriber(f"http://127.0.0.1:{healthy_port}/hook").model_copy(
            update={"id": "healthy"}
        )
        await deliverer.deliver(healthy, _event())  # warm up: imports, first connection
        stop = asyncio.Event()
        lateness: list[float] = []
        healthy_seconds: list[float] = []

        async def ticker() -> None:
            while not stop.is_set():
                due = time.monotonic() + 0.01
                await asyncio.sleep(0.01)
                lateness.append(time.monotonic() - due)

        async def bystander() -> None:
            while not stop.is_set():
                result = await deliverer.deliver(healthy, _event())
                assert result.ok
                healthy_seconds.append(result.duration_seconds)
                await asyncio.sleep(0.005)

        with _huge_header_server() as (port, sent):
            huge = _subscriber(f"http://127.0.0.1:{port}/hook", timeout_seconds=30)
            _reset_peak_rss()
            before = _peak_rss_kib()
            background = [asyncio.create_task(ticker()), asyncio.create_task(bystander())]
            started = time.monotonic()
            result = await deliverer.deliver(huge, _event())
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.2)  # the bystander keeps going a little longer
            stop.set()
            await asyncio.gather(*background)
            grown_mib = (_peak_rss_kib() - before) / 1024
    seen = (
        f"{result.outcome} after {elapsed:.2f} s, {sent[0] if sent else '?'} bytes sent, "
        f"timer {max(lateness):.3f} s late, healthy deliveries up to "
        f"{max(healthy_seconds, default=0):.3f} s ({len(healthy_seconds)}), "
        f"peak RSS +{grown_mib:.1f} MiB"
    )
    assert result.outcome == "connection_error", seen
    assert elapsed < 0.5, seen
    assert sent and sent[0] < HUGE_HEADER_BYTES, seen  # it stopped reading
    assert max(lateness) < 0.1, seen
    assert len(healthy_seconds) >= 3, seen
    assert max(healthy_seconds) < 0.25, seen
    assert grown_mib < 16, seen
