"""What the API refuses in an endpoint URL beyond the subscriber rules.

* A path or query with characters that must be percent-encoded (spaces,
  non-ASCII, a bare ``%``): the worker sends the URL as given, so the
  receiver would get a request line it cannot read.
* With private networks not allowed: a literal private, loopback, link-local
  (cloud metadata) or other internal IP address, or ``localhost``.  Names are
  not resolved here (the worker checks every address a name resolves to, at
  each delivery); this only refuses what is internal on its face.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from config.errors import InvalidInputError
from worker.address_policy import is_public_address

# RFC 3986: unreserved, reserved and '%' as the start of a %XX escape.
_URL_CHARACTERS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_IP_LITERAL = re.compile(r"^[0-9.]+$|:")


def check_endpoint_url(url: str, *, allow_private_networks: bool) -> None:
    """Raise InvalidInputError (field ``url``) for what the API refuses; None if fine."""
    parts = urlsplit(url)
    rest = parts.path + ("?" + parts.query if parts.query else "")
    if not _URL_CHARACTERS.match(rest) or _BAD_ESCAPE.search(rest):
        raise InvalidInputError(
            "url: the path or query has characters that must be percent-encoded "
            "(spaces, non-ASCII, a bare '%'): encode them first, e.g. a space as %20",
            fields=["url"],
        )
    if allow_private_networks:
        return
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise InvalidInputError(
            f"url: {host} is this machine; deliveries to it are not allowed", fields=["url"]
        )
    if _IP_LITERAL.search(host) and not is_public_address(host):
        raise InvalidInputError(
            f"url: {host} is not a public IP address (private, loopback, link-local or "
            "otherwise internal); deliveries to it are not allowed",
            fields=["url"],
        )
