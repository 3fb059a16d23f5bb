"""Broker addresses: parsed once, never printed with their password."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import pika

from config.errors import ConfigError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
# A comma starts the next URL only where a scheme follows, so one in a password
# does not cut it in two (and the halves are not printed as URLs).
_URL_SEPARATOR = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
# The variable that overrides the URL's password (config.settings reads it);
# declared here because the parse errors point to it.
PASSWORD_VARIABLE = "RABBITMQ_PASSWORD"  # noqa: S105 - a variable's name, not a password


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (safe for logs and reprs).

    Works on the text, not on a URL parser's reading of it: with a '/', '?' or
    '#' left unencoded in the password a parser takes part of the password for
    the host, port or path, and would print that part.  Everything between the
    first ':' of the user part and the last '@' is masked, and so is a port
    that is not a number when there is no '@'.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"
    # No '@': after a ':' comes a port, unless the '@host' is missing and it is a
    # password (which may go on past a '/', '?' or '#').
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    name, colon, port = authority.rpartition(":")
    if colon and port and not port.isdigit() and "]" not in port:
        return f"{scheme}{sep}{name}:***"
    return url


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
        for piece in _URL_SEPARATOR.split(raw):
            url = piece.strip(" \t\r\n,")
            if not url:
                continue
            parts = _split(url)
            if username is not None or password is not None:
                # safe="": a '/' or '@' left as is would end the authority part.
                user = quote(
                    username if username is not None else unquote(parts.username or ""), safe=""
                )
                secret = quote(
                    password if password is not None else unquote(parts.password or ""), safe=""
                )
                # The netloc's own host text keeps an IPv6 address's brackets.
                host = parts.netloc.rpartition("@")[2]
                url = urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))
            _check_pika_accepts(url)
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


def _split(url: str) -> SplitResult:
    """``url``'s parts, or a ConfigError that shows the URL with its password masked."""
    shown = repr(redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        raise ConfigError(f"RABBITMQ_URL: cannot parse {shown}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"RABBITMQ_URL: scheme must be amqp or amqps, got {shown}")
    if not parts.netloc:
        raise ConfigError(f"RABBITMQ_URL: no host in {shown}")
    if "@" in f"{parts.path}{parts.query}{parts.fragment}":
        # A '/', '?' or '#' in the password ended the host part early: the rest of
        # the password would be read as host, port and vhost.
        raise ConfigError(
            f"RABBITMQ_URL: cannot parse {shown}: a '/', '?' or '#' in the user name or "
            "password ends the host part early; percent-encode special characters in the "
            f"password (e.g. '/' as %2F), or set the password in {PASSWORD_VARIABLE} instead"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError(
            f"RABBITMQ_URL: cannot parse {shown}: the port must be a number from 0 to 65535"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"RABBITMQ_URL: no host in {shown}")
    return parts


def _check_pika_accepts(url: str) -> None:
    """Refuse at start-up what pika would refuse at the first connect (e.g. ``?heartbeat=x``)."""
    parts = urlsplit(url)
    if parts.username is not None and parts.password is None:
        # pika reads 'user@host' as a password of None and fails at connect time.
        raise ConfigError(
            f"RABBITMQ_URL: {redact_url(url)!r} has a user name but no password: write "
            f"user:password@host, or set the password in {PASSWORD_VARIABLE}"
        )
    try:
        pika.URLParameters(url)
    except ValueError as exc:
        # _split has made sure the password sits whole in the netloc, so pika's
        # complaint is about the query, which redact_url shows anyway.
        raise ConfigError(f"RABBITMQ_URL: cannot use {redact_url(url)!r}: {exc}") from None
