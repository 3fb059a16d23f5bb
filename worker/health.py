"""The worker's HTTP surface: /healthz, /readyz, /status and /metrics.

Nothing served here reveals secrets or payloads.  ``/metrics`` is rendered in a
thread: with thousands of series a render takes long enough (0.7 s for 50,000
samples, docs/scaling.md) that, on the event loop, nothing would be delivered
meanwhile.  prometheus_client takes its own locks to read each metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from config.errors import ConfigError


class HealthServer:
    """Serves liveness, readiness and Prometheus metrics on one port."""

    def __init__(
        self,
        host: str,
        port: int,
        is_ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._is_ready = is_ready
        self._status = status
        self._runner: web.AppRunner | None = None
        # One render at a time: scrapes arriving meanwhile wait rather than
        # each taking a thread.
        self._render_lock = asyncio.Lock()
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._status is not None:
            app.router.add_get("/status", self._status_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            # A port in use or a host name that does not resolve is the operator's
            # to fix in METRICS_HOST/METRICS_PORT: a config error, not a crash.
            reason = (exc.strerror or str(exc)).rpartition(": ")[2]
            raise ConfigError(
                f"METRICS_HOST/METRICS_PORT: cannot serve health and metrics on "
                f"{self._host}:{self._port}: {reason}"
            ) from None
        # With port 0 (tests) the OS picks one; report the real port.
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = self._is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _status_page(self, _request: web.Request) -> web.Response:
        assert self._status is not None
        return web.json_response(self._status())

    async def _metrics(self, _request: web.Request) -> web.Response:
        async with self._render_lock:
            body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
