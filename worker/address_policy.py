"""Which network addresses a delivery may reach (server-side request forgery guard).

The check runs on the addresses the HTTP client will actually connect to
(``worker.http_client`` resolves names itself and drops the non-public
answers), so a public name resolving to 127.0.0.1 or the cloud metadata
address is refused just like the literal address.
"""

from __future__ import annotations

import ipaddress


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
