"""The recorder inside another process (``webhook-api`` with API_RUN_RECORDER=true).

It runs on an event loop of its own in a background thread, so that neither
the API's requests nor the recorder's database writes wait for the other's
loop; stopping it writes (or leaves to the broker) what it holds, like the
standalone ``webhook-recorder``.
"""

from __future__ import annotations

import asyncio
import threading

import structlog

from config.settings import Settings
from control.delivery_log.service import RecorderService
from control.store.attempts import AttemptStore

log = structlog.get_logger("recorder")

_STOP_SECONDS = 30.0


class RecorderThread:
    """A RecorderService on its own loop and thread: ``start()``, then ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: RecorderService | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-log-recorder", daemon=True)

    def start(self) -> None:
        """Start recording in the background (the store is migrated by the caller)."""
        self._thread.start()
        self._started.wait(timeout=10)

    def stop(self) -> None:
        """Ask the recorder to stop, and wait for it (bounded)."""
        loop, service = self._loop, self._service
        if loop is not None and service is not None and not loop.is_closed():
            loop.call_soon_threadsafe(service.request_stop)
        self._thread.join(timeout=_STOP_SECONDS)
        if self._thread.is_alive():
            log.warning("recorder_stop_timed_out", seconds=_STOP_SECONDS)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        store = AttemptStore.from_settings(self._settings)
        try:
            self._loop = asyncio.get_running_loop()
            self._service = RecorderService(self._settings, store)
            self._started.set()
            await self._service.run()
        except Exception:
            log.exception("recorder_crashed")
        finally:
            self._started.set()
            store.close()
