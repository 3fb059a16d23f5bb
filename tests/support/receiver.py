"""A programmable webhook receiver on loopback for worker tests.

``Receiver.respond`` decides each answer from the request (status, delay,
redirect), and every request is recorded with its headers and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def attempt(self) -> int:
        return int(self.headers["X-Webhook-Attempt"])

    @property
    def event_id(self) -> str:
        return self.headers["X-Webhook-Id"]


Responder = Callable[[Received], Awaitable[web.StreamResponse] | web.StreamResponse]


def ok(_request: Received) -> web.Response:
    return web.json_response({"received": True})


@dataclass
class Receiver:
    respond: Responder = ok
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            request.path, dict(request.headers), await request.read(), time.monotonic()
        )
        self.requests.append(received)
        self._arrived.set()
        answer = self.respond(received)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer  # type: ignore[return-value]

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> None:
        """Wait until ``predicate(self.requests)`` holds, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.requests):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"receiver condition not met in {timeout} s; got {len(self.requests)} requests"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(remaining, 0.2))
