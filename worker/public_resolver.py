"""The DNS resolver of the delivery client: aiohttp's own, minus every non-public answer.

aiohttp connects to exactly the addresses its resolver returns (and caches
them for its DNS TTL), so filtering here means the address checked is the
address connected to: a public name that resolves to 127.0.0.1 or to the
cloud metadata address is refused like the literal address, and DNS
rebinding between a check and the connect is not possible. IP-literal URLs
never reach a resolver; ``worker.http_client`` checks those itself.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from config.errors import ForbiddenAddressError
from worker.address_policy import is_public_address


class PublicOnlyResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default), then drops non-public addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The public addresses among ``host``'s; ForbiddenAddressError when none is left."""
        answers = await self._inner.resolve(host, port, family)
        allowed = [answer for answer in answers if is_public_address(answer["host"])]
        if not allowed:
            # Not an OSError, so aiohttp lets it through unwrapped (a DNS failure
            # would become ClientConnectorDNSError): the caller sees the reason.
            raise ForbiddenAddressError(
                f"{host} resolves only to non-public addresses "
                "(set security.allow_private_networks to allow)"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
