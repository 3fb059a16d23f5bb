"""What goes into the endpoint store and what comes out of it.

Input fields use the subscriber file's own field types (``config.subscribers``):
an endpoint is valid exactly when the same subscriber would be.  Output models
are frozen; only :class:`EndpointWithSecrets` (for workers) carries secrets,
and as ``SecretStr``, so no repr, log line or error shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from config.errors import InvalidInputError
from config.subscriber_file import plain_message
from config.subscribers import (
    CircuitBreakerOverride,
    MaxInFlight,
    Subscriber,
    TimeoutSeconds,
    TopicPatterns,
    WebhookUrl,
)

DESCRIPTION_MAX = 1000
PAUSED_REASON_MAX = 500
# A rotation's overlap is for receivers to switch keys, not a second permanent secret.
MAX_OVERLAP_SECONDS = 7 * 24 * 3600

# The per-endpoint options: None means the subscriber default.
OPTION_FIELDS = (
    "timeout_seconds",
    "connect_timeout_seconds",
    "max_in_flight",
    "standard_webhooks",
    "circuit_breaker",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Validate ``data``; an InvalidInputError names each bad field (input never echoed)."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            errors = error.errors()
            fields = [".".join(str(p) for p in e["loc"]) or "(top level)" for e in errors]
            problems = [f"{f}: {plain_message(e)}" for f, e in zip(fields, errors, strict=True)]
            message = "; ".join(problems)
            raise InvalidInputError(message, fields=list(dict.fromkeys(fields))) from None


class EndpointInput(_Frozen):
    """A new endpoint, as an account describes it."""

    url: WebhookUrl
    events: TopicPatterns
    description: str = Field("", max_length=DESCRIPTION_MAX)
    enabled: bool = True
    # An internal sink: receives every account's events, not only its own account's.
    all_accounts: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    connect_timeout_seconds: TimeoutSeconds | None = None
    max_in_flight: MaxInFlight | None = None
    standard_webhooks: bool | None = None
    circuit_breaker: CircuitBreakerOverride | None = None


class EndpointPatch(_Frozen):
    """Changes to an endpoint: only the fields given change; an option given as None
    goes back to its default."""

    url: WebhookUrl | None = None
    events: TopicPatterns | None = None
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)
    enabled: bool | None = None
    all_accounts: bool | None = None
    timeout_seconds: TimeoutSeconds | None = None
    connect_timeout_seconds: TimeoutSeconds | None = None
    max_in_flight: MaxInFlight | None = None
    standard_webhooks: bool | None = None
    circuit_breaker: CircuitBreakerOverride | None = None

    @field_validator("url", "events", "description", "enabled", "all_accounts", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields this patch sets, with their new values."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class Endpoint(_Frozen):
    """A stored endpoint, without its secrets (what the API shows)."""

    id: str
    account_id: str
    url: str
    events: tuple[str, ...]
    description: str
    enabled: bool
    paused: bool
    paused_reason: str | None
    paused_at: datetime | None
    all_accounts: bool
    timeout_seconds: float | None
    connect_timeout_seconds: float | None
    max_in_flight: int | None
    standard_webhooks: bool | None
    circuit_breaker: CircuitBreakerOverride | None
    # Set while a rotation's overlap runs: the previous secret is valid until then.
    previous_secret_expires_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class EndpointWithSecrets(_Frozen):
    """An endpoint with its signing secrets, for workers only."""

    endpoint: Endpoint
    secret: SecretStr
    previous_secret: SecretStr | None = None

    def subscriber(self) -> Subscriber:
        """The endpoint as the worker's Subscriber, unset options at their defaults."""
        endpoint = self.endpoint
        options = {
            name: getattr(endpoint, name)
            for name in OPTION_FIELDS
            if getattr(endpoint, name) is not None
        }
        return Subscriber(
            id=endpoint.id,
            account=None if endpoint.all_accounts else endpoint.account_id,
            all_accounts=endpoint.all_accounts,
            url=endpoint.url,
            secret=self.secret,
            previous_secret=self.previous_secret,
            events=endpoint.events,
            enabled=endpoint.enabled,
            **options,
        )


class Snapshot(_Frozen):
    """Every endpoint at one moment, and the version that moment had reached."""

    version: int
    endpoints: tuple[EndpointWithSecrets, ...]


class Changes(_Frozen):
    """What changed after a version: endpoints created or changed, ids deleted."""

    version: int
    endpoints: tuple[EndpointWithSecrets, ...]
    deleted: tuple[str, ...]
