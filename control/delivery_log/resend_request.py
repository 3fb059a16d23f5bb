"""What a resend asks for, and what it reports: requests, their checks, the per-event report.

Three requests: one event (:class:`OneEvent`), the events a filter selects
(:class:`Matching`), or what failed since a time (:class:`Recovery`).  The
report lists each event considered, in order, as ``published`` (confirmed by
the broker), ``not_found`` or ``refused``, and says whether the run was cut
short (the limit, a refused copy, the broker or store lost midway).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from config.errors import InvalidInputError
from control.store.resend_selection import EventFilter

MAX_RESEND = 10_000
DEFAULT_LIMIT = 1_000
MAX_EVENT_IDS = 1_000
Result = Literal["published", "not_found", "refused"]
Kind = Literal["event", "filter", "recover"]


@dataclass(frozen=True)
class OneEvent:
    """Resend this event."""

    event_id: str


@dataclass(frozen=True)
class Matching:
    """Resend the events the filter selects, oldest first, at most ``limit``."""

    where: EventFilter
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class Recovery:
    """Resend what failed since ``since`` and has not succeeded since, at most ``limit``."""

    since: datetime
    limit: int = DEFAULT_LIMIT


ResendRequest = OneEvent | Matching | Recovery


@dataclass(frozen=True)
class EventResult:
    """What became of one event."""

    event_id: str
    account: str | None  # None for an asked-for id the log has nothing of here
    result: Result
    event_type: str | None = None
    reason: str | None = None


@dataclass
class ResendReport:
    """Every event considered, in order, and whether the run stopped before the end."""

    endpoint_id: str
    kind: Kind
    events: list[EventResult] = field(default_factory=list)
    # More events matched than the limit allowed: the oldest ``limit`` were taken.
    limit_reached: bool = False
    # Why the run ended before every selected event was tried, if it did.
    stopped: str | None = None
    # Sent when RabbitMQ was lost, before their confirms came: they may or may not arrive.
    unconfirmed: list[str] = field(default_factory=list)

    def count(self, result: Result) -> int:
        """How many events ended as ``result``."""
        return sum(1 for event in self.events if event.result == result)

    def counts(self) -> dict[str, int]:
        """Events per result (every result named, zeros included)."""
        return {name: self.count(name) for name in ("published", "not_found", "refused")}

    @property
    def complete(self) -> bool:
        """Whether every selected event was tried."""
        return self.stopped is None and not self.limit_reached

    def as_document(self) -> dict[str, Any]:
        """The report as JSON-ready data (the API's answer, ``webhook-log --format json``)."""
        return {
            "endpoint_id": self.endpoint_id,
            "request": self.kind,
            **self.counts(),
            "complete": self.complete,
            "limit_reached": self.limit_reached,
            "stopped": self.stopped,
            "unconfirmed": list(self.unconfirmed),
            "events": [asdict(event) for event in self.events],
        }


def kind_of(request: ResendRequest) -> Kind:
    """``event``, ``filter`` or ``recover``."""
    if isinstance(request, OneEvent):
        return "event"
    return "filter" if isinstance(request, Matching) else "recover"


def check_request(request: ResendRequest) -> None:
    """InvalidInputError (naming the field) for a request that cannot be run."""
    if isinstance(request, OneEvent):
        if not request.event_id:
            raise InvalidInputError("event_id: must not be empty", fields=["event_id"])
        return
    if not 1 <= request.limit <= MAX_RESEND:
        raise InvalidInputError(f"limit: must be 1-{MAX_RESEND}", fields=["limit"])
    if isinstance(request, Matching):
        where = request.where
        if len(where.event_ids) > MAX_EVENT_IDS:
            raise InvalidInputError(
                f"event_ids: at most {MAX_EVENT_IDS} per request", fields=["event_ids"]
            )
        if not where.describe():
            raise InvalidInputError(
                "filter: give event_id, or at least one of event_ids, outcome, status, "
                "since, until (an empty filter would resend everything)",
                fields=["event_ids", "outcome", "status", "since", "until"],
            )
        if where.since and where.until and where.until <= where.since:
            raise InvalidInputError("until: must be after since", fields=["until"])
