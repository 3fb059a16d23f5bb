"""Following the pause markers for the lanes: polls, announcements, and a 410's marker.

A pause is shared through a marker queue per subscriber (worker.pause): a lane
pauses where a marker is and resumes where none is, checked for many lanes in
one pipelined pass.  A 410 Gone pauses its lane here at once and writes the
marker for every other replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from broker.url import BrokerUrl
from config.errors import BrokerError
from worker.fact_outbox import note_paused
from worker.lane import Lane
from worker.pause import mark_paused, paused_among

log = structlog.get_logger("worker")


class PauseFollower:
    """Pauses and resumes lanes as their markers say; writes the marker after a 410."""

    def __init__(
        self,
        broker: BrokerUrl,
        *,
        is_current: Callable[[Lane], bool],
        sync: Callable[[Lane], Awaitable[None]],
    ) -> None:
        self._broker = broker
        # Whether the lane is still the one configured (not removed meanwhile).
        self._is_current = is_current
        # Makes a lane's consumer match its new state (Lanes.sync).
        self._sync = sync

    async def follow(self, lanes: list[Lane]) -> None:
        """Pause where a marker is, resume where none is: one pipelined check (worker.pause)."""
        if not lanes:
            return
        # A lane paused or resumed while the check ran (a 410 here) keeps its new state.
        before = {lane.subscriber.id: lane.paused for lane in lanes}
        try:
            marked = await asyncio.to_thread(
                paused_among, self._broker, [lane.subscriber.id for lane in lanes]
            )
        except BrokerError as exc:
            log.warning("pause_check_failed", error=str(exc))
            return
        for lane in lanes:
            if lane.marker_pending or lane.paused != before[lane.subscriber.id]:
                continue  # its marker is being written, or it changed meanwhile
            if not self._is_current(lane):
                continue  # removed meanwhile
            has_marker = lane.subscriber.id in marked
            if has_marker != lane.paused:
                reason = "pause marker present" if has_marker else "pause marker removed"
                lane.set_paused(has_marker, reason)
                await self._sync(lane)

    async def pause_for_gone(self, lane: Lane, event_id: str | None) -> None:
        """The receiver answered 410 Gone: stop until an operator resumes (on every replica)."""
        if lane.paused:
            return
        lane.set_paused(True, "receiver answered 410 Gone")
        note_paused(lane.subscriber, event_id)
        lane.marker_pending = True
        await self._sync(lane)
        try:
            await asyncio.to_thread(
                mark_paused,
                self._broker,
                lane.subscriber.id,
                reason="410 Gone",
                event_id=event_id or "",
            )
        except BrokerError as exc:
            # Without a marker the next poll resumes the subscriber, and the next
            # 410 pauses it again: one more dead letter, nothing worse.
            log.error("pause_marker_failed", subscriber=lane.subscriber.id, error=str(exc))
        finally:
            lane.marker_pending = False
