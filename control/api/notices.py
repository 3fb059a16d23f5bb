"""Change notices, sent out of the request path.

A request hands its notice over (``publish`` never blocks and never raises);
a background task publishes them in order, one at a time, on one dedicated
thread that owns the broker connection (pika is not thread-safe) and keeps it
alive between notices.  A broker failure is logged as ``change_notice_failed``
and the notice is dropped: workers also reconcile with the store periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import structlog

from broker.change_notices import ChangeNotice
from config.errors import BrokerError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Far more than a burst of API writes; beyond it the broker is clearly not keeping up.
MAX_PENDING = 10_000
# Well inside the 30 s heartbeat (broker.url.BrokerUrl.parameters).
KEEP_ALIVE_SECONDS = 10.0
# On shutdown, how long notices still waiting may take to go out.
DRAIN_SECONDS = 5.0


class NoticePublisher(Protocol):
    """What publishes a notice, blocking (``broker.change_notices.ChangeNoticePublisher``)."""

    def publish(self, notice: ChangeNotice) -> None: ...

    def keep_alive(self) -> None: ...

    def close(self) -> None: ...


class ChangeNotices(Protocol):
    """Where the API sends a notice after each committed change."""

    async def start(self) -> None: ...

    def publish(self, notice: ChangeNotice) -> None: ...

    async def stop(self) -> None: ...


class BrokerChangeNotices:
    """Publishes notices to the control exchange in the background, best effort."""

    def __init__(
        self,
        publisher: NoticePublisher,
        *,
        max_pending: int = MAX_PENDING,
        keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self._publisher = publisher
        self._keep_alive_seconds = keep_alive_seconds
        self._drain_seconds = drain_seconds
        self._queue: asyncio.Queue[ChangeNotice] = asyncio.Queue(max_pending)
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background task (on the running event loop)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="change-notices")
        self._task = asyncio.create_task(self._run(), name="change-notices")

    def publish(self, notice: ChangeNotice) -> None:
        """Queue ``notice`` for publishing; a full queue drops it (logged)."""
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            _failed(notice, "too many notices are waiting for the broker")

    async def stop(self) -> None:
        """Give waiting notices a moment to go out, then close the connection."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(self._drain_seconds):
                await self._queue.join()
        except TimeoutError:
            log.warning("change_notices_dropped", count=self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        # Runs after whatever the thread is still doing, then the thread ends.
        await self._call(self._publisher.close)
        assert self._executor is not None
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._keep_alive_seconds):
                    notice = await self._queue.get()
            except TimeoutError:
                await self._call(self._publisher.keep_alive)
                continue
            try:
                await self._call(self._publisher.publish, notice)
            except BrokerError as exc:
                _failed(notice, str(exc))
            except Exception:
                # A bug must not end the task: later notices would never go out.
                log.exception("change_notice_failed", **_fields(notice))
            finally:
                self._queue.task_done()

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        assert self._executor is not None, "start() first"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)


def _fields(notice: ChangeNotice) -> dict[str, object]:
    return {
        "version": notice.version,
        "account": notice.account,
        "endpoint_id": notice.endpoint_id,
        "change": notice.change,
    }


def _failed(notice: ChangeNotice, error: str) -> None:
    log.warning("change_notice_failed", error=error, **_fields(notice))
