"""The one settings object: environment plus the subscriber file, validated at start-up.

Each environment variable is declared exactly once, as the alias of a field of
:class:`Settings`; :func:`load_settings` reads the variables those aliases
name, so adding a setting is adding one field.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
)

from broker.url import DEFAULT_URL, PASSWORD_VARIABLE, BrokerUrl
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

# RABBITMQ_URL is the broker field's alias; these two only override its credentials
# (so a password can stay out of the URL) and are read together with it.
BROKER_USERNAME = "RABBITMQ_USERNAME"
# One label of a host name (RFC 1123).
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
BROKER_PASSWORD = PASSWORD_VARIABLE  # declared with the URL parser, whose errors name it


class Settings(BaseModel):
    """Everything the producer, the worker and the tools need, frozen after start-up.

    Fields with an upper-case alias come from that environment variable; the
    rest come from the subscriber file.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, populate_by_name=True)

    broker: BrokerUrl = Field(
        default_factory=lambda: BrokerUrl.parse(DEFAULT_URL), alias="RABBITMQ_URL"
    )
    config_path: Path = Field(DEFAULT_CONFIG_PATH, alias="WEBHOOK_CONFIG")
    metrics_host: str = Field("127.0.0.1", alias="METRICS_HOST")
    metrics_port: int = Field(9100, ge=0, le=65535, alias="METRICS_PORT")
    log_format: Literal["json", "console"] = Field("json", alias="LOG_FORMAT")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    shutdown_grace_seconds: float = Field(30.0, ge=0, le=3600, alias="SHUTDOWN_GRACE_SECONDS")
    # The endpoint store (control.store). A URL may carry a password, so it is kept
    # as a secret like the key; unset means the store's SQLite default.
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    secrets_key: SecretStr | None = Field(None, alias="SECRETS_KEY")
    secrets_key_file: Path | None = Field(None, alias="SECRETS_KEY_FILE")
    # An HTTP proxy every delivery goes through (CONNECT for https targets). It
    # may carry credentials, so it is kept as a secret.
    egress_proxy: SecretStr | None = Field(None, alias="WEBHOOK_EGRESS_PROXY")

    subscribers: tuple[Subscriber, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    security: SecurityPolicy = SecurityPolicy()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()

    @field_validator("metrics_host")
    @classmethod
    def _check_metrics_host(cls, value: str) -> str:
        # Checked here, not when the health server binds, so check-config catches it.
        try:
            ipaddress.ip_address(value)
        except ValueError:
            labels = value.removesuffix(".").split(".")
            # An all-digit last label (999.1.1.1) is a mistyped IPv4 address, not a name.
            if len(value) > 253 or labels[-1].isdigit() or not all(map(HOST_LABEL.match, labels)):
                raise ValueError("must be an IP address (such as 0.0.0.0) or a host name") from None
        return value

    @field_validator("egress_proxy")
    @classmethod
    def _check_egress_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never quote the value: it may hold a password.
        if value is None or not value.get_secret_value():
            return None
        try:
            parts = urlsplit(value.get_secret_value())
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("must be an HTTP proxy URL: http://[user:password@]host:port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be http://[user:password@]host:port, with no path")
        return value

    @property
    def egress_proxy_url(self) -> str | None:
        """The egress proxy's URL (credentials included), or None for direct delivery."""
        return None if self.egress_proxy is None else self.egress_proxy.get_secret_value()

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


def environment_variables() -> tuple[str, ...]:
    """Every environment variable the settings read, for docs and tests."""
    names = [f.alias for f in Settings.model_fields.values() if f.alias]
    return (*names, BROKER_USERNAME, BROKER_PASSWORD)


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_subscriber_file: bool = True
) -> Settings:
    """Read the environment and the subscriber file; raise ConfigError on any mistake.

    The producer passes ``require_subscriber_file=False``: it can publish without
    the file (the worker declares the queues), but uses it when present.
    """
    environ = dict(os.environ if environ is None else environ)
    # Names are case-insensitive; reading a mapping handed in (not os.environ
    # directly) lets tests and callers supply their own environment.
    wanted = set(environment_variables())
    env = {k.upper(): v for k, v in environ.items() if k.upper() in wanted}
    values: dict[str, Any] = {
        k: v for k, v in env.items() if k not in (BROKER_USERNAME, BROKER_PASSWORD)
    }
    values["RABBITMQ_URL"] = BrokerUrl.parse(
        env.get("RABBITMQ_URL", DEFAULT_URL),
        username=env.get(BROKER_USERNAME),
        password=env.get(BROKER_PASSWORD),
    )
    try:
        from_environment = Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"invalid environment: {problems}") from None
    path = from_environment.config_path
    if path.exists() or require_subscriber_file:
        file = load_subscriber_file(path, environ)
    else:
        file = SubscriberFile()
    return from_environment.model_copy(
        update={
            "subscribers": file.subscribers,
            "retry": file.retry,
            "security": file.security,
            "circuit_breaker": file.circuit_breaker,
        }
    )
