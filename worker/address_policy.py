"""Which network addresses a delivery may reach (server-side request forgery guard).

The check runs on the addresses the HTTP client will actually connect to
(``worker.public_resolver`` drops the non-public answers of aiohttp's resolver,
``worker.http_client`` checks IP-literal hosts), so a public name resolving to
127.0.0.1 or the cloud metadata address is refused just like the literal address.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address, IPv6Network

# IPv6 forms whose last 32 bits are an IPv4 address the packets end up at (a
# translator, a tunnel or the kernel takes them there), so that address is
# the one to judge: NAT64's well-known prefix (RFC 6052), SIIT's IPv4-translated
# form (RFC 2765), and the deprecated IPv4-compatible form, which also holds
# :: and ::1.  IPv4-mapped (::ffff:0:0/96), 6to4 and Teredo have ipaddress
# properties of their own.
_LAST_32_BITS_ARE_IPV4 = (
    IPv6Network("64:ff9b::/96"),
    IPv6Network("::ffff:0:0:0/96"),
    IPv6Network("::/96"),
)
# IANA allocates global unicast only from 2000::/3; outside it lie site-local
# fec0::/10, local-use NAT64 64:ff9b:1::/48, SRv6 SIDs 5f00::/16 and the rest
# that older Pythons' is_global still calls global.
_GLOBAL_UNICAST = IPv6Network("2000::/3")
# Inside 2000::/3 and not global, but newer (2024) than some Pythons' is_global.
_NOT_GLOBAL = (IPv6Network("3fff::/20"),)  # documentation (RFC 9637)


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; False for everything internal.

    An IPv6 address that carries an IPv4 address (IPv4-mapped, -translated or
    -compatible, NAT64, 6to4, Teredo) is judged by the IPv4 address it carries.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, IPv4Address):
        return _is_public_ipv4(ip)
    embedded = embedded_ipv4(ip)
    if embedded:
        return all(_is_public_ipv4(v4) for v4 in embedded)
    return (
        ip in _GLOBAL_UNICAST
        and ip.is_global
        and not ip.is_multicast
        and not any(ip in net for net in _NOT_GLOBAL)
    )


def embedded_ipv4(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses ``ip`` stands for; empty for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        # (server, client): the client's public address, un-XORed by ipaddress.
        return ip.teredo
    if any(ip in net for net in _LAST_32_BITS_ARE_IPV4):
        return (IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


def _is_public_ipv4(ip: IPv4Address) -> bool:
    # is_global excludes loopback, RFC 1918, link-local (169.254.169.254 metadata),
    # CGNAT and the reserved ranges.
    return ip.is_global and not ip.is_multicast
