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
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class AddressRefused(OSError):
    """The host is, or resolves to, an address the server must not connect to.
    An ``OSError``, so aiohttp reports it as a failed connection."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped or -compatible,
    6to4, NAT64 (well-known and local-use prefixes), Teredo (the client's)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def address_allowed(ip: IpAddress, *, allow_loopback: bool = False) -> bool:
    """Whether the server may connect to ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return address_allowed(inner, allow_loopback=allow_loopback)
    if ip.is_loopback:
        return allow_loopback
    # is_global is False for private, link-local, CGNAT (100.64/10), reserved,
    # documentation, benchmarking, unspecified and this-network (0/8) space.
    return ip.is_global and not ip.is_multicast


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
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(literal, allow_loopback=allow_loopback):
        raise AddressRefused(f"{host} is not a public address")
    if literal is None and _looks_numeric(host):
        # 2130706433, 0x7f.1, 127.1: forms some resolvers read as addresses.
        raise AddressRefused(f"{host!r} is an address in a non-standard form")
    return parts.scheme, host, port


def _looks_numeric(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return all(label.isdigit() or label.lower().startswith("0x") for label in labels)


class GuardedResolver(AbstractResolver):
    """Resolves a name and returns only addresses ``address_allowed`` admits;
    none left is ``AddressRefused``. aiohttp connects to exactly these."""

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
        if not results:
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
