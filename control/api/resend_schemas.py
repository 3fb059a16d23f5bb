"""Request and answer bodies of resend and recover (see :mod:`control.api.resends`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from config.errors import InvalidInputError
from control.delivery_log.resend_request import (
    DEFAULT_LIMIT,
    MAX_EVENT_IDS,
    MAX_RESEND,
    Matching,
    OneEvent,
    Recovery,
    ResendReport,
    ResendRequest,
)
from control.store.attempt_tables import EVENT_ID_LENGTH
from control.store.resend_selection import EventFilter

# The worker's outcomes (worker.delivery.Outcome; a test keeps them equal).
Outcome = Literal["success", "http_error", "timeout", "connection_error", "forbidden_address"]
EventId = Field(min_length=1, max_length=EVENT_ID_LENGTH)
Limit = Field(
    DEFAULT_LIMIT,
    ge=1,
    le=MAX_RESEND,
    description=f"at most this many events (oldest first); default {DEFAULT_LIMIT}",
)
_FILTER_FIELDS = ("event_ids", "outcome", "status", "since", "until", "limit")


class ResendBody(BaseModel):
    """Either `event_id` (one event), or a filter: events with an attempt at this endpoint
    matching every field given (at least one of `event_ids`, `outcome`, `status`, `since`,
    `until`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str | None = Field(None, min_length=1, max_length=EVENT_ID_LENGTH)
    event_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_EVENT_IDS)
    outcome: Outcome | None = None
    status: int | None = Field(None, ge=100, le=599, description="the HTTP status answered")
    since: AwareDatetime | None = Field(None, description="attempt started at or after")
    until: AwareDatetime | None = Field(None, description="attempt started before")
    limit: int = Limit

    def request(self) -> ResendRequest:
        """The resend this body asks for; InvalidInputError naming the fields that clash."""
        if self.event_id is not None:
            clashing = [name for name in _FILTER_FIELDS if name in self.model_fields_set]
            if clashing:
                raise InvalidInputError(
                    f"event_id: give either event_id or a filter, not both ({', '.join(clashing)})",
                    fields=["event_id", *clashing],
                )
            return OneEvent(self.event_id)
        for event_id in self.event_ids or ():
            if not 1 <= len(event_id) <= EVENT_ID_LENGTH:
                raise InvalidInputError(
                    f"event_ids: each must be 1-{EVENT_ID_LENGTH} characters", fields=["event_ids"]
                )
        where = EventFilter(
            event_ids=frozenset(self.event_ids or ()),
            outcome=self.outcome,
            status=self.status,
            since=self.since,
            until=self.until,
        )
        return Matching(where, self.limit)


class RecoverBody(BaseModel):
    """Resend every event whose attempts at this endpoint since `since` failed (retried or
    dead-lettered) and that has not been delivered there since."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: AwareDatetime = Field(description="failed attempts started at or after this time")
    limit: int = Limit

    def request(self) -> Recovery:
        """The recovery this body asks for."""
        return Recovery(self.since, self.limit)


class ResentEvent(BaseModel):
    """What became of one event."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    account: str | None = Field(description="the event's account; null for an unknown id")
    result: Literal["published", "not_found", "refused"] = Field(
        description="published: confirmed by RabbitMQ, on its way as attempt 1; not_found: "
        "the log holds no body for it (or no attempt here); refused: RabbitMQ refused the copy "
        "(the endpoint's queue is gone, or full)"
    )
    event_type: str | None
    reason: str | None = Field(description="why it was not published")


class ResendAnswer(BaseModel):
    """The per-event report of one resend or recover request."""

    model_config = ConfigDict(frozen=True)

    endpoint_id: str
    request: Literal["event", "filter", "recover"]
    published: int
    not_found: int
    refused: int
    complete: bool = Field(description="every selected event was tried")
    limit_reached: bool = Field(
        description="more events matched than `limit`: the oldest `limit` were taken"
    )
    stopped: str | None = Field(description="why the run ended early, if it did")
    unconfirmed: list[str] = Field(
        description="event ids sent when RabbitMQ was lost, before their confirms: they may "
        "or may not arrive"
    )
    events: list[ResentEvent]

    @classmethod
    def of(cls, report: ResendReport) -> ResendAnswer:
        """The answer for ``report``."""
        return cls.model_validate(report.as_document())
