"""An account's delivery log: its attempts, one event's story, one endpoint's summary.

An account sees only the attempts made at endpoints it owns (an all-accounts
endpoint's too; ``control.store.attempt_scope``); another account's endpoint
or event is 404, exactly like an unknown one.  Reads only: every store call
runs in a worker thread.  ``webhook-log`` answers the same questions with the
same names (``cli.log``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from config.errors import InvalidInputError
from config.subscribers import SUBSCRIBER_ID
from control.api.auth import Actor
from control.api.dependencies import AccountId, EndpointId, Services
from control.api.errors import error_responses
from control.delivery_log.filters import OUTCOMES, Outcome, attempt_filter, parse_time
from control.delivery_log.views import AttemptPageView, EndpointSummary, EventView
from control.store.attempt_listing import MAX_PAGE
from control.store.attempt_tables import EVENT_ID_LENGTH

DEFAULT_PAGE = 100
MAX_CURSOR_CHARS = 200
EVENT_ID_PATTERN = r"^[\x21-\x7e]+$"

router = APIRouter(prefix="/v1/accounts/{account}", tags=["delivery log"])

EventIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=EVENT_ID_LENGTH,
        pattern=EVENT_ID_PATTERN,
        description="The event's id (its `X-Webhook-Id`).",
        examples=["evt_5f0c2a"],
    ),
]


def _time(name: str) -> object:
    return Query(
        max_length=40,
        description=f"attempts that started {'at or after' if name == 'since' else 'before'} "
        "this ISO-8601 time (UTC when it has no zone), e.g. 2026-01-31T10:30:00Z",
        json_schema_extra={"format": "date-time"},
    )


@router.get(
    "/attempts",
    response_model=AttemptPageView,
    summary="List delivery attempts",
    responses=error_responses(401, 404, 422, 503),
)
async def list_attempts(
    account: AccountId,
    _actor: Actor,
    services: Services,
    endpoint: Annotated[
        str | None,
        Query(pattern=SUBSCRIBER_ID.pattern, description="only this endpoint's (one of yours)"),
    ] = None,
    event_id: Annotated[
        str | None,
        Query(
            max_length=EVENT_ID_LENGTH, pattern=EVENT_ID_PATTERN, description="only this event's"
        ),
    ] = None,
    outcome: Annotated[Outcome | None, Query(description=f"one of {', '.join(OUTCOMES)}")] = None,
    status: Annotated[int | None, Query(ge=100, le=999, description="the HTTP status")] = None,
    since: Annotated[str | None, _time("since")] = None,
    until: Annotated[str | None, _time("until")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="attempts per page")] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page"),
    ] = None,
) -> AttemptPageView:
    """The attempts at the account's endpoints, newest first, filtered by every parameter
    given; 404 for an unknown account or an endpoint that is not the account's."""
    where = attempt_filter(
        endpoint=endpoint,
        event_id=event_id,
        outcome=outcome,
        status=status,
        since=_parsed(since, "since"),
        until=_parsed(until, "until"),
    )
    reader = services.store.delivery_log()
    page = await asyncio.to_thread(reader.attempts, account, where, limit=limit, cursor=cursor)
    return AttemptPageView.of(page)


@router.get(
    "/events/{event_id}",
    response_model=EventView,
    summary="What happened to an event",
    responses=error_responses(401, 404, 422, 503),
)
async def get_event(
    account: AccountId, event_id: EventIdPath, _actor: Actor, services: Services
) -> EventView:
    """The event (its type, and its body while the log keeps it) and every attempt at
    the account's endpoints, per endpoint, in order; 404 when there is none."""
    reader = services.store.delivery_log()
    histories = await asyncio.to_thread(reader.event, account, event_id)
    return EventView.of(histories[0])


@router.get(
    "/endpoints/{endpoint_id}/summary",
    response_model=EndpointSummary,
    summary="How an endpoint is doing",
    tags=["endpoints"],
    responses=error_responses(401, 404, 422, 503),
)
async def get_summary(
    account: AccountId, endpoint_id: EndpointId, _actor: Actor, services: Services
) -> EndpointSummary:
    """Attempts, successes, failures, success rate, p50 and p99 latency, last success and
    last failure, for the last hour and the last day (a deleted endpoint's too)."""
    reader = services.store.delivery_log()
    figures = await asyncio.to_thread(reader.summary, account, endpoint_id)
    return EndpointSummary.of(endpoint_id, figures)


def _parsed(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidInputError(f"{field}: {exc}", fields=[field]) from None
