"""The subscriber file: who gets which events, where, signed with what, retried how.

Loaded at start-up (and again by a running worker whenever the file changes);
every mistake becomes one :class:`ConfigError` whose message names the file,
the subscriber and the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Protocol
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

from wire.envelope import ACCOUNT_ID

SUBSCRIBER_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# A topic pattern is dot-separated words; a word is `*`, `#` or a literal.
TOPIC_WORD = re.compile(r"^(?:\*|#|[A-Za-z0-9_-]+)$")

# The product page promises attempts 1-3: at most two retries.
MAX_RETRIES = 2


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_Threshold = Annotated[int, Field(ge=1, le=10_000)]
_Cooldown = Annotated[float, Field(gt=0, le=24 * 3600)]


class CircuitBreakerOverride(_Model):
    """A subscriber's own circuit-breaker keys; the file-wide ones fill the rest."""

    enabled: bool | None = None
    failure_threshold: _Threshold | None = None
    cooldown_seconds: _Cooldown | None = None
    max_cooldown_seconds: _Cooldown | None = None


class CircuitBreakerPolicy(_Model):
    """When to stop consuming a failing subscriber's queue, and how long to wait."""

    enabled: bool = True
    failure_threshold: _Threshold = 5
    cooldown_seconds: _Cooldown = 5.0
    max_cooldown_seconds: _Cooldown = 300.0

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> CircuitBreakerPolicy:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError(
                f"max_cooldown_seconds ({self.max_cooldown_seconds:g}) must be at least "
                f"cooldown_seconds ({self.cooldown_seconds:g})"
            )
        return self

    def overridden_by(self, override: CircuitBreakerOverride | None) -> CircuitBreakerPolicy:
        """This file-wide policy with the keys a subscriber set itself taken from ``override``."""
        if override is None:
            return self
        own = override.model_dump(exclude_none=True)
        return CircuitBreakerPolicy.model_validate(self.model_dump() | own)


def _check_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; receivers authenticate by signature")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    _check_host_encodes(parts.hostname, value)
    return value


def _check_host_encodes(host: str, url: str) -> None:
    """Refuse a host no DNS name can stand for (the message names the host, never the path)."""
    try:
        # What the HTTP client (aiohttp, through yarl) does to the URL on every
        # attempt, and the IDNA labels' own limits (e.g. 63 characters).
        URL(url)
        host.encode("idna")
    except ValueError as exc:  # UnicodeError included
        reason = str(exc).replace(url, "...")
        raise ValueError(f"host {host!r} cannot be encoded as a DNS name ({reason})") from None


def _check_events(value: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in value:
        words = pattern.split(".")
        if not pattern or not all(TOPIC_WORD.match(w) for w in words):
            raise ValueError(
                f"{pattern!r} is not a topic pattern: use dot-separated words, "
                "'*' for one word, '#' for any number (e.g. 'order.*')"
            )
    if len(set(value)) != len(value):
        raise ValueError("lists a pattern twice")
    return value


# The rules of a subscriber's fields, as types: the file's Subscriber and the
# endpoint store's input models (control.store.models) share them.
WebhookUrl = Annotated[str, AfterValidator(_check_url)]
TopicPatterns = Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(_check_events)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=300)]
MaxInFlight = Annotated[int, Field(ge=1, le=1000)]


class _SubscriberFields(Protocol):
    """The fields :class:`SubscriberMethods` reads (a Subscriber's, or its record's)."""

    @property
    def account(self) -> str | None: ...
    @property
    def all_accounts(self) -> bool: ...
    @property
    def url(self) -> str: ...
    @property
    def secret(self) -> SecretStr: ...
    @property
    def previous_secret(self) -> SecretStr | None: ...


class SubscriberMethods:
    """What a subscriber answers from its fields: written once for the validated model
    and for the record a worker keeps of it (config.subscriber_record)."""

    __slots__ = ()

    def signing_secrets(self: _SubscriberFields) -> tuple[str, ...]:
        """The secrets every delivery is signed with: the current one, then the previous."""
        current = self.secret.get_secret_value()
        if self.previous_secret is None:
            return (current,)
        return (current, self.previous_secret.get_secret_value())

    def receives_account(self: _SubscriberFields, account: str) -> bool:
        """Whether an event of ``account`` may be delivered here."""
        return self.all_accounts or account == self.account

    @property
    def host(self: _SubscriberFields) -> str:
        """The URL's host name, for logs (never the path, which may carry a token)."""
        return urlsplit(self.url).hostname or ""


class Subscriber(_Model, SubscriberMethods):
    """One receiving endpoint."""

    id: Annotated[str, Field(description="unique, [a-z0-9-]")]
    # The merchant whose events this endpoint receives; only ``all_accounts: true``
    # (an internal sink, said explicitly) receives every account's events instead.
    account: str | None = None
    all_accounts: bool = False
    url: WebhookUrl
    secret: SecretStr
    # Set during a rotation's overlap: deliveries are signed with both secrets.
    previous_secret: SecretStr | None = None
    events: TopicPatterns
    # false: no worker consumes its queue, but its bindings stay, so its events
    # wait there until it is enabled again (a running worker follows the change).
    enabled: bool = True
    timeout_seconds: TimeoutSeconds = 10.0
    connect_timeout_seconds: TimeoutSeconds = 5.0
    max_in_flight: MaxInFlight = 16
    standard_webhooks: bool = False
    # Only the keys given here override the file-wide ``circuit_breaker``.
    circuit_breaker: CircuitBreakerOverride | None = None

    @field_validator("account")
    @classmethod
    def _check_account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_ID.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (the merchant's id)")
        return value

    @model_validator(mode="after")
    def _scoped(self) -> Subscriber:
        # An endpoint without an account would have to see everyone's events:
        # that must be asked for in so many words, never be a default.
        if self.all_accounts and self.account is not None:
            raise FieldProblem(("account",), "give either account or all_accounts: true, not both")
        if not self.all_accounts and self.account is None:
            raise FieldProblem(
                ("account",),
                "is required: the merchant's account id (or all_accounts: true for an "
                "internal endpoint that receives every account's events)",
            )
        return self

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not SUBSCRIBER_ID.match(value):
            raise ValueError(
                "must be 1-64 characters of a-z, 0-9 and '-', not starting or ending with '-'"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class RetryPolicy(_Model):
    """How long to wait before attempt 2 and attempt 3."""

    delays_seconds: tuple[float, ...] = (30.0, 300.0)

    @field_validator("delays_seconds")
    @classmethod
    def _check_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > MAX_RETRIES:
            raise ValueError(f"at most {MAX_RETRIES} delays: the wire contract allows attempts 1-3")
        for delay in value:
            if not 0.001 <= delay <= 7 * 24 * 3600:
                raise ValueError(f"{delay} is out of range (1 ms to 7 days)")
        return value

    @property
    def max_attempts(self) -> int:
        """Attempts in all, the first one included."""
        return len(self.delays_seconds) + 1


class SecurityPolicy(_Model):
    """What delivery targets are allowed."""

    allow_private_networks: bool = False


class SubscriberFile(_Model):
    """The whole subscriber file."""

    subscribers: tuple[Subscriber, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    security: SecurityPolicy = SecurityPolicy()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()

    @model_validator(mode="after")
    def _unique_ids(self) -> SubscriberFile:
        seen: set[str] = set()
        for index, sub in enumerate(self.subscribers):
            if sub.id in seen:
                raise FieldProblem(("subscribers", index, "id"), f"duplicate id {sub.id!r}")
            seen.add(sub.id)
        return self

    @model_validator(mode="after")
    def _breakers_combine(self) -> SubscriberFile:
        # Each half may be valid alone and still clash once merged (cap below start).
        for index, sub in enumerate(self.subscribers):
            try:
                self.circuit_breaker.overridden_by(sub.circuit_breaker)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise FieldProblem(("subscribers", index, "circuit_breaker"), message) from None
        return self


# The keys a YAML error may name: the schema's own, never a key nested in a value.
class FieldProblem(ValueError):
    """A problem with a known location, raised from a model-level validator."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
