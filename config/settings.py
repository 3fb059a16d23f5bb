"""The one settings object: environment plus the subscriber file, validated at start-up.

Each environment variable is declared exactly once, as the alias of a field of
:class:`Settings`; :func:`load_settings` reads the variables those aliases
name, so adding a setting is adding one field.

With ``DATABASE_URL`` set, the endpoint store holds the subscribers: the file
is not read, and its file-wide settings (retry delays, private networks) come
from the environment instead.
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
from config.subscriber_file import load_subscriber_file
from config.subscribers import (
    CircuitBreakerPolicy,
    RetryPolicy,
    SecurityPolicy,
    Subscriber,
    SubscriberFile,
)

DEFAULT_CONFIG_PATH = Path("config/subscribers.yaml")
# The endpoint store's SQLite file inside WEBHOOK_DATA_DIR (when DATABASE_URL is unset).
STORE_FILE_NAME = "webhooks.db"

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
    # Where `webhook-dlq purge` writes its backups (customer data: mode 0600, folder 0700).
    dlq_backup_dir: Path = Field(
        default_factory=lambda: _state_home() / "webhook-relay" / "dlq-backups",
        alias="DLQ_BACKUP_DIR",
    )
    # The endpoint store (control.store). A URL may carry a password, so it is kept
    # as a secret like the key; unset means the store's SQLite default.
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    secrets_key: SecretStr | None = Field(None, alias="SECRETS_KEY")
    secrets_key_file: Path | None = Field(None, alias="SECRETS_KEY_FILE")
    # webhook-api: where it listens, the bearer tokens it accepts (a comma-separated
    # list, and/or a file with one per line), and where it keeps its SQLite store
    # when DATABASE_URL is unset.
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8080, ge=0, le=65535, alias="API_PORT")
    api_tokens: SecretStr | None = Field(None, alias="API_TOKENS")
    api_tokens_file: Path | None = Field(None, alias="API_TOKENS_FILE")
    # webhook-api's server processes, sharing its port (uvicorn workers): one
    # process uses one core at most.
    api_workers: int = Field(1, ge=1, le=64, alias="API_WORKERS")
    data_dir: Path = Field(Path("webhook-data"), alias="WEBHOOK_DATA_DIR")
    # With the store, what the subscriber file's ``retry:`` and ``security:`` say.
    retry_delays_seconds: tuple[float, ...] = Field((30.0, 300.0), alias="WEBHOOK_RETRY_DELAYS")
    allow_private_networks: bool = Field(False, alias="WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    # How often a worker re-reads its subscribers even without a change notice, so
    # that a lost notice or a store outage heals by itself.
    reconcile_seconds: float = Field(30.0, gt=0, le=3600, alias="RECONCILE_SECONDS")

    # The delivery log (worker.attempt_log, control.delivery_log): off by default,
    # since records only wait in the broker until a recorder (webhook-recorder)
    # writes them to the store; retention is the age at which they are deleted.
    delivery_log: bool = Field(False, alias="DELIVERY_LOG")
    delivery_log_retention_days: float = Field(
        7.0, gt=0, le=3650, alias="DELIVERY_LOG_RETENTION_DAYS"
    )
    recorder_metrics_port: int = Field(9101, ge=0, le=65535, alias="RECORDER_METRICS_PORT")
    # webhook-api also runs the recorder (instead of a webhook-recorder process).
    api_run_recorder: bool = Field(False, alias="API_RUN_RECORDER")

    # An HTTP proxy every delivery goes through (CONNECT for https targets). It
    # may carry credentials, so it is kept as a secret.
    egress_proxy: SecretStr | None = Field(None, alias="WEBHOOK_EGRESS_PROXY")

    # Operational notifications (control.notifications, ``webhook-notifier``): the
    # operator's URL (kept as a secret: such URLs often carry a token) and the
    # secret its notices are signed with (or a file holding it); the window in
    # which at most one notice per endpoint is sent, and how long the first fact
    # waits for those that come with it (a 410 pauses *and* dead-letters).
    operator_notification_url: SecretStr | None = Field(None, alias="OPERATOR_NOTIFICATION_URL")
    operator_notification_secret: SecretStr | None = Field(
        None, alias="OPERATOR_NOTIFICATION_SECRET"
    )
    operator_notification_secret_file: Path | None = Field(
        None, alias="OPERATOR_NOTIFICATION_SECRET_FILE"
    )
    notification_window_seconds: float = Field(
        60.0, gt=0, le=86400, alias="NOTIFICATION_WINDOW_SECONDS"
    )
    notification_batch_seconds: float = Field(2.0, ge=0, le=60, alias="NOTIFICATION_BATCH_SECONDS")

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

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # DATABASE_URL= (as compose leaves an unset variable) must not switch the
        # worker to the store.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("retry_delays_seconds", mode="before")
    @classmethod
    def _split_delays(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return tuple(float(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise ValueError("comma-separated seconds, such as 30,300") from None

    @field_validator("retry_delays_seconds")
    @classmethod
    def _check_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # The file's rules for ``retry.delays_seconds``, with their messages.
        try:
            RetryPolicy(delays_seconds=value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @property
    def uses_store(self) -> bool:
        """Whether the subscribers come from the endpoint store (DATABASE_URL is set)."""
        return self.database_url is not None

    @field_validator("operator_notification_url", "operator_notification_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("operator_notification_url")
    @classmethod
    def _check_operator_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never quote the value: it may hold a token.
        if value is None:
            return None
        try:
            parts = urlsplit(value.get_secret_value())
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
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

    def store_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file in WEBHOOK_DATA_DIR when it is unset."""
        if self.database_url is not None and self.database_url.get_secret_value().strip():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / STORE_FILE_NAME}"

    @property
    def store_allows_private_networks(self) -> bool:
        """Whether endpoints from the store may target private networks (default false)."""
        return bool(self.allow_private_networks)

    def breaker_policy(self, subscriber: Subscriber) -> CircuitBreakerPolicy:
        """The circuit-breaker policy in force for ``subscriber``."""
        return self.circuit_breaker.overridden_by(subscriber.circuit_breaker)


def _state_home() -> Path:
    # XDG's place for data a program keeps between runs; not the current folder,
    # which in the image is where the code lives.
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def environment_variables() -> tuple[str, ...]:
    """Every environment variable the settings read, for docs and tests."""
    names = [f.alias for f in Settings.model_fields.values() if f.alias]
    return (*names, BROKER_USERNAME, BROKER_PASSWORD)


def load_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings the environment gives, without reading the subscriber file.

    For the tools that never deliver from the file (``webhook-api``); raises
    ConfigError on any mistake.
    """
    environ = os.environ if environ is None else environ
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
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"invalid environment: {problems}") from None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    require_subscriber_file: bool = True,
    require_secrets: bool = True,
) -> Settings:
    """Read the environment and the subscriber file; raise ConfigError on any mistake.

    The producer passes ``require_subscriber_file=False``: it can publish without
    the file (the worker declares the queues), but uses it when present.  Tools
    that never sign (the producer, ``webhook-dlq``) pass ``require_secrets=False``:
    a secret's unset ``${VAR}`` is then no error.  With DATABASE_URL set the file
    is not read at all: the endpoint store holds the subscribers, and retry delays
    and private networks come from the environment.
    """
    environ = dict(os.environ if environ is None else environ)
    from_environment = load_environment(environ)
    if from_environment.uses_store:
        return from_environment.model_copy(
            update={
                "retry": RetryPolicy(delays_seconds=from_environment.retry_delays_seconds),
                "security": SecurityPolicy(
                    allow_private_networks=from_environment.allow_private_networks
                ),
            }
        )
    path = from_environment.config_path
    if path.exists() or require_subscriber_file:
        file = load_subscriber_file(path, environ, require_secrets=require_secrets)
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
