"""Server-side requests that never reach an internal address.

Whatever the server fetches or calls on someone's say-so (an upload by URL, a
webhook endpoint) goes only to public addresses. The name is resolved once,
every address it resolves to is checked, and the connection is made only to a
checked address: an aiohttp resolver (``GuardedResolver``) does the lookup and
the check, and aiohttp connects to what it returns, so there is no second
lookup for a DNS rebinding to slip into. A literal address in the URL (which
aiohttp does not resolve) is checked before any request (``check_url``).

Refused: loopback, private (RFC 1918, unique-local), link-local (the cloud
metadata address 169.254.169.254 among them), CGNAT, multicast, ``0.0.0.0/8``,
``::``, reserved and documentation ranges, and IPv6 forms that embed an IPv4
address (mapped, 6to4, NAT64, Teredo), which are judged by that IPv4 address.
``allow_loopback`` admits 127.0.0.0/8 and ``::1`` only: for tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """The host is, or resolves to, an address the server must not connect to.
    An ``OSError``, so aiohttp reports it as a failed connection."""


# Not reachable from the internet, or not a unicast host at all, beyond what
# ``ipaddress``'s properties already say (they call 100.64/10, multicast,
# 6to4 and the deprecated site-local and IPv4-compatible ranges global).
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host (CVE-2025-24354)
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "::ffff:0:0/96",  # IPv4-mapped: a v6 socket to it is a v4 connection
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 among them)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def _embedded_v4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and routes to)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _REFUSED_V6[0] and int(address) > 1:  # ::a.b.c.d (IPv4-compatible)
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_loopback(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address == _LOOPBACK_V6:
            return True
        mapped = address.ipv4_mapped
        return mapped is not None and mapped in _LOOPBACK_V4
    return address in _LOOPBACK_V4


def address_refusal(address: Address, *, allow_loopback: bool = False) -> str | None:
    """Why a fetch may not connect to ``address``; ``None`` if it may."""
    if allow_loopback and is_loopback(address):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "it is a scoped (link-local) address"
        for v4 in _embedded_v4(address):
            if (why := address_refusal(v4)) is not None:
                return f"it embeds the IPv4 address {v4}, and {why}"
        refused: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = _REFUSED_V6
    else:
        refused = _REFUSED_V4
    for network in refused:
        if address in network:
            return f"it is in {network}, which is not public"
    if (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    ):
        return "it is not a public unicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "it is a site-local address"
    return None


def literal_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def looks_numeric(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return all(
        label.isdigit() or (label.lower().startswith("0x") and label[2:].isalnum())
        for label in labels
    )


def address_allowed(ip: Address, *, allow_loopback: bool = False) -> bool:
    """Whether the server may connect to ``ip``."""
    return address_refusal(ip, allow_loopback=allow_loopback) is None


def check_url(url: str, *, allow_loopback: bool = False) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL whose host is a name or an allowed
    address; ``ValueError`` for a URL that is not one, ``AddressRefused`` for a
    literal address that is refused. No lookup and no connection."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number from 0 to 65535") from None
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(literal, allow_loopback=allow_loopback):
        raise AddressRefused(f"{host} is not a public address")
    if literal is None and looks_numeric(host):
        # 2130706433, 0x7f.1, 127.1: forms some resolvers read as addresses.
        raise AddressRefused(f"{host!r} is an address in a non-standard form")
    return parts.scheme, host, port


class GuardedResolver(AbstractResolver):
    """Resolves a name, refuses it (``AddressRefused``) if any of its addresses
    is refused, and returns the checked addresses: aiohttp connects to exactly
    these. A name with one internal answer among public ones is refused whole:
    a resolver under an attacker's control chooses which answer is used."""

    def __init__(self, *, allow_loopback: bool = False) -> None:
        self.allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, family=family, flags=socket.AI_ADDRCONFIG
            )
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host!r}: {exc}") from None
        results: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _type, proto, _canon, sockaddr in infos:
            address = str(sockaddr[0])
            if not address_allowed(
                ipaddress.ip_address(address), allow_loopback=self.allow_loopback
            ):
                refused.append(address)
                continue
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": int(sockaddr[1]),
                    "family": fam,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        if refused or not results:
            raise AddressRefused(
                f"{host!r} resolves only to addresses the server may not connect to "
                f"({', '.join(sorted(set(refused))) or 'none'})"
            )
        return results

    async def close(self) -> None:
        return None


def guarded_session(*, allow_loopback: bool = False, **kwargs: Any) -> aiohttp.ClientSession:
    """A client session that connects only to checked addresses: one lookup per
    new connection, never cached past it, never redirected for it (callers pass
    ``allow_redirects=False`` and check each hop with ``check_url``)."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_loopback=allow_loopback), use_dns_cache=False
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False, **kwargs)
