"""Which network addresses a delivery may reach (server-side request forgery guard).

The check runs on the addresses the HTTP client will actually connect to (our
resolver filters them), so a public name resolving to 127.0.0.1 or the cloud
metadata address is refused just like the literal address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class ForbiddenAddressError(OSError):
    """The target resolves only to loopback, private, link-local or other non-public addresses."""


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for everything internal."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global excludes loopback, RFC 1918, link-local (169.254.169.254 metadata),
    # CGNAT, unique-local IPv6 and the reserved ranges.
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, then drops every non-public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if is_public_address(r["host"])]
        if not allowed:
            raise ForbiddenAddressError(
                f"{host} resolves only to non-public addresses "
                "(set security.allow_private_networks to allow)"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def find_forbidden(exc: BaseException) -> ForbiddenAddressError | None:
    """The ForbiddenAddressError inside an aiohttp connector error, if any."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ForbiddenAddressError):
            return current
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None
