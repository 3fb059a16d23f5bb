"""Broker addresses: parsed once, never printed with their password."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika

from config.errors import ConfigError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (safe for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class BrokerUrl:
    """One or more AMQP URLs (comma separated) tried in order on connect.

    The real URLs are kept out of ``repr`` and ``str``; only :meth:`parameters`
    hands them to pika.
    """

    _urls: tuple[str, ...] = field(repr=False)

    @classmethod
    def parse(
        cls, raw: str, *, username: str | None = None, password: str | None = None
    ) -> BrokerUrl:
        """Parse ``RABBITMQ_URL``; ``username``/``password`` override the URL's credentials."""
        urls = []
        for piece in raw.split(","):
            url = piece.strip()
            if not url:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps"):
                raise ConfigError(
                    f"RABBITMQ_URL: scheme must be amqp or amqps, got {redact_url(url)!r}"
                )
            if not parts.hostname:
                raise ConfigError(f"RABBITMQ_URL: no host in {redact_url(url)!r}")
            if username is not None or password is not None:
                # safe="": a '/' or '@' left as is would end the authority part.
                user = quote(
                    username if username is not None else unquote(parts.username or ""), safe=""
                )
                secret = quote(
                    password if password is not None else unquote(parts.password or ""), safe=""
                )
                host = parts.hostname
                if parts.port is not None:
                    host = f"{host}:{parts.port}"
                url = urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))
            urls.append(url)
        if not urls:
            raise ConfigError("RABBITMQ_URL is empty")
        return cls(tuple(urls))

    @property
    def redacted(self) -> str:
        """The URLs with passwords masked, for logs."""
        return ",".join(redact_url(u) for u in self._urls)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"BrokerUrl({self.redacted!r})"

    def parameters(
        self, *, heartbeat: int = 30, connection_name: str = "webhook-relay"
    ) -> list[pika.URLParameters]:
        """pika connection parameters, one per URL, with TLS host checking for ``amqps``."""
        result = []
        for url in self._urls:
            params = pika.URLParameters(url)
            if urlsplit(url).scheme == "amqps" and params.ssl_options is not None:
                # pika builds a default context but no server_hostname, which makes a
                # hostname-checking context refuse to connect at all.
                params.ssl_options = pika.SSLOptions(
                    params.ssl_options.context or ssl.create_default_context(),
                    server_hostname=params.host,
                )
            params.heartbeat = heartbeat
            params.blocked_connection_timeout = 60
            params.client_properties = {"connection_name": connection_name}
            result.append(params)
        return result
