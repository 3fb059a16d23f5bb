"""aiohttp's client errors as this project's DeliveryTransportErrors, with short messages.

The messages end up in logs and in dead letters' ``x-last-error`` header, so
they say what failed in a few words and never carry the URL's path or query
(a receiver may put a token there): aiohttp's own ``str()`` of several errors
includes the whole URL.
"""

from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http import RawResponseMessage

from config.errors import (
    ConnectError,
    ConnectionClosedError,
    DeliveryTransportError,
    InvalidResponseError,
)

# aiohttp's message for a status line or header over its limit goes on to
# quote the first 100 bytes of it: the receiver's bytes, not worth keeping.
_TOO_LONG = re.compile(r"Got more than (\d+) bytes")


def describe_client_error(exc: aiohttp.ClientError, url: str) -> DeliveryTransportError:
    """The DeliveryTransportError that says what ``exc`` (raised for ``url``) means."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ConnectError(f"TLS error: {_tls_reason(exc.certificate_error)}")
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return ConnectError(f"TLS error: {_tls_reason(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ConnectError(f"cannot resolve {exc.host}: {_os_reason(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ConnectError(f"egress proxy unreachable: {_os_error(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(_os_error(exc.os_error))
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return ConnectError(f"egress proxy refused the connection: HTTP {exc.status}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        partial = isinstance(exc.message, RawResponseMessage)
        return ConnectionClosedError(
            "server closed the connection" + (" in the middle of its answer" if partial else "")
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionClosedError(f"incomplete answer: {_scrubbed(str(exc), url)}")
    if isinstance(exc, aiohttp.ClientOSError):
        return ConnectionClosedError(f"connection lost: {_os_error(exc)}")
    if isinstance(exc, aiohttp.ClientResponseError):
        # The answer's head could not be parsed, or was over a limit (a status
        # line, a header or the number of headers).
        too_long = _TOO_LONG.match(exc.message)
        if too_long:
            return InvalidResponseError(
                f"invalid HTTP response: a status line or header over {too_long[1]} bytes"
            )
        return InvalidResponseError(f"invalid HTTP response: {_scrubbed(exc.message, url)}")
    if isinstance(exc, aiohttp.InvalidURL):
        return DeliveryTransportError(f"invalid URL: {_scrubbed(exc.description or '', url)}")
    return DeliveryTransportError(describe_unexpected(exc, url))


def describe_unexpected(exc: BaseException, url: str) -> str:
    """``Type: message`` for an error nobody foresaw, without ``url``'s path or query."""
    text = _scrubbed(str(exc), url)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrubbed(text: str, url: str) -> str:
    try:
        parts = urlsplit(url)
        secrets = [url, parts.path, parts.query]
    except ValueError:
        secrets = [url]
    for secret in secrets:
        if len(secret) > 1:
            text = text.replace(secret, "...")
    return text


def _tls_reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    detail = getattr(error, "verify_message", None)
    if reason and detail:
        return f"{reason} ({detail})"
    if reason:
        return str(reason)
    return str(error) if not isinstance(error, ssl.SSLError) else type(error).__name__


def _os_reason(error: OSError) -> str:
    return str(error.strerror or error)


def _os_error(error: OSError) -> str:
    return f"{type(error).__name__}: {_os_reason(error)}"
