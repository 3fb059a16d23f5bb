"""The API's request and response bodies, beyond the store's own models.

Endpoint bodies are the store's models themselves (``EndpointInput`` to
create, ``EndpointPatch`` to change, ``Endpoint`` to show), so the API accepts
exactly what the store and the subscriber file accept.  Requests refuse
unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control.store.models import MAX_OVERLAP_SECONDS, PAUSED_REASON_MAX, Endpoint
from worker.delivery import DeliveryResult

# The event types with a sample (wire.samples.SAMPLE_EVENTS; a test keeps them equal).
SampleEvent = Literal["order.created", "order.updated", "order.cancelled"]
EXCERPT_CHARS = 200
DEFAULT_OVERLAP_SECONDS = 24 * 3600


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorBody(_Response):
    """Every error answer: a message, and the fields it is about when it is about input."""

    error: str = Field(description="what went wrong, for people")
    fields: list[str] | None = Field(
        None, description="the request fields at fault (422 only); dotted for nested fields"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": "url: must start with http:// or https://", "fields": ["url"]}]
        }
    )


class EndpointWithSecret(Endpoint):
    """An endpoint and its signing secret: shown when created and when rotated, never again."""

    secret: str = Field(description="the signing secret (whsec_...); store it now")


class EndpointPage(_Response):
    """One page of an account's endpoints, oldest first."""

    data: list[Endpoint]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class EndpointTestRequest(_Request):
    """Which sample event to send."""

    event: SampleEvent = "order.created"


class EndpointTestResult(_Response):
    """What the endpoint answered to one signed sample event (marked X-Webhook-Test: true)."""

    ok: bool = Field(description="true when it answered 2xx")
    status: int | None = Field(description="the HTTP status; null when there was no answer")
    latency_ms: float
    response_excerpt: str = Field(description=f"the first {EXCERPT_CHARS} characters of its answer")
    error: str | None = Field(description="why it failed, when it did")

    @classmethod
    def of(cls, result: DeliveryResult) -> EndpointTestResult:
        """The API's view of a delivery attempt."""
        return cls(
            ok=result.ok,
            status=result.status or None,
            latency_ms=round(result.duration_seconds * 1000, 1),
            response_excerpt=result.response_excerpt.decode("utf-8", "replace")[:EXCERPT_CHARS],
            error=result.error,
        )


class PauseRequest(_Request):
    """Why the endpoint is paused (shown with it)."""

    reason: str | None = Field(None, max_length=PAUSED_REASON_MAX)


class RotateRequest(_Request):
    """How long the previous secret stays valid next to the new one."""

    overlap_seconds: int = Field(DEFAULT_OVERLAP_SECONDS, ge=0, le=MAX_OVERLAP_SECONDS)


class EventType(_Response):
    """An event type endpoints can subscribe to, with an example delivery body."""

    event: str
    description: str
    example: dict[str, Any]


class EventTypeList(_Response):
    """The known event types."""

    data: list[EventType]


class Health(_Response):
    """The process is up."""

    status: Literal["ok"] = "ok"
