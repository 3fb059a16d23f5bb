"""The benchmark's webhook receiver: verifies every signature, records receipt times.

``python -m bench.receiver --port P --secret S [--fail-rate 0.1] [--kind lean|aiohttp]``

Two implementations of the same endpoint (``POST /webhook``):

* ``lean`` (default): HTTP/1.1 keep-alive on a bare ``asyncio.Protocol``, so the
  receiver takes as little of the machine's two cores as possible;
* ``aiohttp``: an ``aiohttp.web`` application, like ``devtools.demo_receiver``.

Both verify the signature with ``wire.signature.verify`` (401 on a mismatch),
answer 500 to the attempts ``bench.common.attempt_fails`` picks, and record, for
every accepted delivery, the publish time stamped in the body and the receipt
time.  Control endpoints: ``GET /stats``, ``GET /results``, ``POST /reset``.
Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any

from bench.common import SENT_PATTERN, attempt_fails
from config.errors import SignatureError
from wire.signature import verify

OK_BODY = b'{"received":true}'


class Recorder:
    """Counts and receipt records of the deliveries seen since the last reset."""

    def __init__(self, secret: str, fail_rate: float) -> None:
        self.secret = secret
        self.fail_rate = fail_rate
        self.reset()

    def reset(self) -> None:
        self.ok = 0
        self.failed = 0
        self.rejected = 0
        self.duplicates = 0
        self.seen: set[str] = set()
        self.sent_ns: list[int] = []
        self.recv_ns: list[int] = []
        self.attempts: list[int] = []
        self.first_ns = 0
        self.last_ns = 0

    def webhook(self, path: str, body: bytes, signature: str, event_id: str, attempt: str) -> int:
        """Handle one delivery to ``path`` (one per subscriber); return the HTTP status."""
        received = time.time_ns()
        try:
            verify(self.secret, body, signature)
        except SignatureError:
            self.rejected += 1
            return 401
        number = int(attempt) if attempt.isdigit() else 0
        if attempt_fails(event_id, number, self.fail_rate):
            self.failed += 1
            return 500
        # Every subscriber gets the same event id: a duplicate is a repeat on one path.
        key = f"{path} {event_id}"
        if key in self.seen:
            self.duplicates += 1
            return 200
        self.seen.add(key)
        self.ok += 1
        match = SENT_PATTERN.search(body)
        self.sent_ns.append(int(match.group(1)) if match else 0)
        self.recv_ns.append(received)
        self.attempts.append(number)
        if not self.first_ns:
            self.first_ns = received
        self.last_ns = received
        return 200

    def stats(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "pid": os.getpid(),
        }

    def results(self) -> dict[str, Any]:
        return {
            **self.stats(),
            "sent_ns": self.sent_ns,
            "recv_ns": self.recv_ns,
            "attempts": self.attempts,
        }

    def control(self, method: str, path: str) -> tuple[int, bytes]:
        if method == "GET" and path == "/stats":
            return 200, json.dumps(self.stats()).encode()
        if method == "GET" and path == "/results":
            return 200, json.dumps(self.results()).encode()
        if method == "POST" and path.startswith("/reset"):
            # /reset?fail_rate=0.1 also changes the share of attempts answered 500.
            _, _, query = path.partition("?")
            for item in query.split("&"):
                name, _, value = item.partition("=")
                if name == "fail_rate":
                    self.fail_rate = float(value)
            self.reset()
            return 200, b"{}"
        return 404, b'{"error":"not found"}'


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    500: b"Internal Server Error",
}


class _LeanHttp(asyncio.Protocol):
    """Just enough HTTP/1.1 for aiohttp's client: Content-Length bodies, keep-alive."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if len(parts) != 3 or "chunked" in headers.get("transfer-encoding", ""):
                self._answer(400, b'{"error":"unsupported request"}', close=True)
                return
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path = parts[0], parts[1]
            if method == "POST" and path.startswith("/webhook"):
                status = self.recorder.webhook(
                    path,
                    body,
                    headers.get("x-webhook-signature", ""),
                    headers.get("x-webhook-id", "?"),
                    headers.get("x-webhook-attempt", "?"),
                )
                payload = OK_BODY if status == 200 else b'{"error":"refused"}'
            else:
                status, payload = self.recorder.control(method, path)
            self._answer(status, payload, close=headers.get("connection", "").lower() == "close")

    def _answer(self, status: int, payload: bytes, *, close: bool) -> None:
        assert self.transport is not None
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS.get(status, b"Status"),
            len(payload),
        )
        self.transport.write(head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + payload)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _serve_lean(recorder: Recorder, port: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _LeanHttp(recorder), "127.0.0.1", port)
    print(f"receiver (lean) on http://127.0.0.1:{port}/webhook", flush=True)
    async with server:
        await stop.wait()


async def _serve_aiohttp(recorder: Recorder, port: int, stop: asyncio.Event) -> None:
    from aiohttp import web

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        status = recorder.webhook(
            request.path,
            body,
            request.headers.get("X-Webhook-Signature", ""),
            request.headers.get("X-Webhook-Id", "?"),
            request.headers.get("X-Webhook-Attempt", "?"),
        )
        return web.Response(
            status=status,
            body=OK_BODY if status == 200 else b'{"error":"refused"}',
            content_type="application/json",
        )

    async def control(request: web.Request) -> web.Response:
        status, payload = recorder.control(request.method, request.path_qs)
        return web.Response(status=status, body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    app.router.add_post("/webhook/{subscriber}", webhook)
    app.router.add_get("/stats", control)
    app.router.add_get("/results", control)
    app.router.add_post("/reset", control)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"receiver (aiohttp) on http://127.0.0.1:{port}/webhook", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def _main(args: argparse.Namespace) -> None:
    recorder = Recorder(args.secret, args.fail_rate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serve = _serve_lean if args.kind == "lean" else _serve_aiohttp
    await serve(recorder, args.port, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=os.environ.get("BENCH_SECRET", ""))
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--kind", choices=("lean", "aiohttp"), default="lean")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("set --secret or BENCH_SECRET")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
