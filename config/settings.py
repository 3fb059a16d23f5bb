"""The one settings object: environment plus the subscriber file, validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_serializer

from broker.url import DEFAULT_URL, BrokerUrl
from config.errors import ConfigError
from config.subscribers import (
    CircuitBreakerPolicy,
    RetryPolicy,
    SecurityPolicy,
    Subscriber,
    SubscriberFile,
    load_subscriber_file,
)

DEFAULT_CONFIG_PATH = Path("config/subscribers.yaml")


class _Environment(BaseModel):
    """Raw environment variables (names are case-insensitive)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rabbitmq_url: SecretStr = SecretStr(DEFAULT_URL)
    rabbitmq_username: str | None = None
    rabbitmq_password: SecretStr | None = None
    webhook_config: Path = DEFAULT_CONFIG_PATH
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)


class Settings(BaseModel):
    """Everything the producer and the worker need, frozen after start-up."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    broker: BrokerUrl
    config_path: Path
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_seconds: float = 30.0
    subscribers: tuple[Subscriber, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    security: SecurityPolicy = SecurityPolicy()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()

    @field_serializer("broker")
    def _redacted_broker(self, broker: BrokerUrl) -> str:
        # model_dump() would otherwise expose the dataclass's raw URLs, password included.
        return broker.redacted

    def subscriber(self, subscriber_id: str) -> Subscriber | None:
        """The subscriber with this id, or None if it is not configured."""
        for sub in self.subscribers:
            if sub.id == subscriber_id:
                return sub
        return None

    def breaker_policy(self, subscriber: Subscriber) -> CircuitBreakerPolicy:
        """The circuit-breaker policy in force for ``subscriber``."""
        return self.circuit_breaker.overridden_by(subscriber.circuit_breaker)


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_subscriber_file: bool = True
) -> Settings:
    """Read the environment and the subscriber file; raise ConfigError on any mistake.

    The producer passes ``require_subscriber_file=False``: it can publish without
    the file (the worker declares the queues), but uses it when present.
    """
    environ = dict(os.environ if environ is None else environ)
    try:
        env = _Environment.model_validate(_lower(environ))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid environment: {problems}") from None
    broker = BrokerUrl.parse(
        env.rabbitmq_url.get_secret_value(),
        username=env.rabbitmq_username,
        password=env.rabbitmq_password.get_secret_value() if env.rabbitmq_password else None,
    )
    if env.webhook_config.exists() or require_subscriber_file:
        file = load_subscriber_file(env.webhook_config, environ)
    else:
        file = SubscriberFile()
    return Settings(
        broker=broker,
        config_path=env.webhook_config,
        metrics_host=env.metrics_host,
        metrics_port=env.metrics_port,
        log_format=env.log_format,
        log_level=env.log_level,
        shutdown_grace_seconds=env.shutdown_grace_seconds,
        subscribers=file.subscribers,
        retry=file.retry,
        security=file.security,
        circuit_breaker=file.circuit_breaker,
    )


def _lower(environ: Mapping[str, str]) -> dict[str, str]:
    # Reading a mapping handed in (not os.environ directly) lets tests and
    # callers supply their own environment.
    wanted = set(_Environment.model_fields)
    return {k.lower(): v for k, v in environ.items() if k.lower() in wanted}
