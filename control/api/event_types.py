"""``GET /v1/event-types``: the events endpoints can subscribe to, with example bodies."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import orjson
from fastapi import APIRouter

from control.api.auth import Actor
from control.api.errors import error_responses
from control.api.schemas import EventType, EventTypeList
from wire.envelope import build_envelope
from wire.samples import SAMPLE_EVENTS, page_example

DESCRIPTIONS = {
    "order.created": "An order was placed.",
    "order.updated": "An order changed, e.g. its status; `previousStatus` says what it was.",
    "order.cancelled": 'An order was cancelled: `status` is "cancelled".',
}

router = APIRouter(tags=["event types"])


@cache
def event_types() -> EventTypeList:
    """The known event types, each with the product page's example as a delivery body."""
    return EventTypeList(data=[_event_type(event) for event in SAMPLE_EVENTS])


def _event_type(event: str) -> EventType:
    data = page_example(event)
    # The envelope's timestamp: when the order last changed, as it would be on the wire.
    moment = datetime.fromisoformat(str(data.get("updatedAt") or data["createdAt"]))
    body = orjson.loads(build_envelope(event, data, now=moment))
    return EventType(event=event, description=DESCRIPTIONS[event], example=body)


@router.get(
    "/v1/event-types",
    response_model=EventTypeList,
    summary="List the event types",
    responses=error_responses(401),
)
async def list_event_types(_actor: Actor) -> EventTypeList:
    """The event types endpoints can subscribe to (topic patterns such as `order.*` match
    them), with the body a delivery of each carries."""
    return event_types()
