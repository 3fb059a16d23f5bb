"""The delivery address policy on IPv6 addresses that carry an IPv4 address, and on
the IPv6 ranges older Pythons call global.  Each range has a refused case and,
where one exists, a public counter-example that must still pass."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from worker.address_policy import embedded_ipv4, is_public_address

# (address, public, what it is)
TABLE = [
    # NAT64 well-known prefix 64:ff9b::/96: the translator connects to the last 32 bits.
    ("64:ff9b::7f00:1", False, "NAT64 of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", False, "NAT64 of 169.254.169.254 (cloud metadata)"),
    ("64:ff9b::a00:1", False, "NAT64 of 10.0.0.1"),
    ("64:ff9b::c0a8:101", False, "NAT64 of 192.168.1.1"),
    ("64:ff9b::808:808", True, "NAT64 of 8.8.8.8"),
    # Local-use NAT64 64:ff9b:1::/48: where the IPv4 sits is the network's choice.
    ("64:ff9b:1::7f00:1", False, "local-use NAT64, loopback inside"),
    ("64:ff9b:1::808:808", False, "local-use NAT64, public inside"),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", False, "local-use NAT64, last address"),
    # 6to4 2002::/16: bits 16-47 are the IPv4 address.
    ("2002:7f00:1::", False, "6to4 of 127.0.0.1"),
    ("2002:a9fe:a9fe::1", False, "6to4 of 169.254.169.254"),
    ("2002:c0a8:101:1::1", False, "6to4 of 192.168.1.1"),
    ("2002::", False, "6to4 of 0.0.0.0"),
    ("2002:808:808::1", True, "6to4 of 8.8.8.8"),
    # IPv4-compatible ::/96 (deprecated); :: and ::1 are in it too.
    ("::127.0.0.1", False, "IPv4-compatible 127.0.0.1"),
    ("::10.1.2.3", False, "IPv4-compatible 10.1.2.3"),
    ("::a9fe:a9fe", False, "IPv4-compatible 169.254.169.254"),
    ("::", False, "unspecified"),
    ("::1", False, "loopback"),
    # IPv4-translated ::ffff:0:0:0/96 (SIIT).
    ("::ffff:0:7f00:1", False, "IPv4-translated 127.0.0.1"),
    ("::ffff:0:a00:1", False, "IPv4-translated 10.0.0.1"),
    ("::ffff:0:808:808", True, "IPv4-translated 8.8.8.8"),
    # IPv4-mapped ::ffff:0:0/96.
    ("::ffff:127.0.0.1", False, "IPv4-mapped 127.0.0.1"),
    ("::ffff:a9fe:a9fe", False, "IPv4-mapped 169.254.169.254"),
    ("::ffff:8.8.8.8", True, "IPv4-mapped 8.8.8.8"),
    # Teredo 2001::/32: server IPv4 in bits 32-63, client IPv4 XOR 0xffffffff in the last 32.
    ("2001:0:808:808::80ff:fffe", False, "Teredo, server 8.8.8.8, client 127.0.0.1"),
    ("2001:0:808:808::5601:5601", False, "Teredo, server 8.8.8.8, client 169.254.169.254"),
    ("2001:0:7f00:1::f7f7:f7f7", False, "Teredo, server 127.0.0.1, client 8.8.8.8"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, "Teredo, RFC 4380's example (192.0.2.45)"),
    ("2001::1", False, "Teredo, server 0.0.0.0"),
    ("2001:0:808:808::f7f7:f7f7", True, "Teredo, server and client 8.8.8.8"),
    # Site-local fec0::/10 (deprecated, never global).
    ("fec0::1", False, "site-local"),
    ("fed0:1:2:3::4", False, "site-local"),
    ("feff:ffff::1", False, "site-local, last block"),
    # Everything else that is not global unicast.
    ("3fff::1", False, "documentation 3fff::/20"),
    ("2001:db8::1", False, "documentation 2001:db8::/32"),
    ("5f00::1", False, "SRv6 SIDs 5f00::/16"),
    ("100::1", False, "discard-only 100::/64"),
    ("4000::1", False, "outside 2000::/3, unallocated"),
    ("fd00:ec2::254", False, "unique local (AWS metadata)"),
    ("fe80::1%eth0", False, "link-local, scoped"),
    ("ff0e::1", False, "global-scope multicast"),
    # Ordinary global unicast still passes.
    ("2606:4700:4700::1111", True, "Cloudflare DNS"),
    ("2001:4860:4860::8888", True, "Google DNS (2001:4860::/32 is not Teredo)"),
    ("2a00:1450:4001:82b::200e", True, "global unicast"),
    ("2606:4700::5efe:a00:1", True, "global prefix, ISATAP-looking interface id"),
]


@pytest.mark.parametrize(("address", "public", "what"), TABLE, ids=[row[0] for row in TABLE])
def test_address_policy_table(address: str, public: bool, what: str) -> None:
    assert is_public_address(address) is public, what


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("64:ff9b::7f00:1", ["127.0.0.1"]),
        ("2002:7f00:1::", ["127.0.0.1"]),
        ("::127.0.0.1", ["127.0.0.1"]),
        ("::ffff:0:7f00:1", ["127.0.0.1"]),
        ("::ffff:7f00:1", ["127.0.0.1"]),
        ("2001:0:808:808::80ff:fffe", ["8.8.8.8", "127.0.0.1"]),
        ("2606:4700:4700::1111", []),
        ("64:ff9b:1::7f00:1", []),
    ],
)
def test_embedded_ipv4_is_found(address: str, embedded: list[str]) -> None:
    assert embedded_ipv4(IPv6Address(address)) == tuple(IPv4Address(a) for a in embedded)
