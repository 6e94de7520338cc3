"""Who a request comes from: the client address that rate limits count by.

The address is the TCP peer's, unless the peer is one of the configured trusted
proxies (``trusted_proxies``: a load balancer, a CDN, nginx). Then the proxies'
own header (``forwarded_header``: ``X-Forwarded-For``, or RFC 7239
``Forwarded``) is read from the right: each trusted proxy appended the address
it saw, so the right-most address that is not a trusted proxy is the first hop
nobody trusted, and what it wrote further left is whatever a client chose to
send. A header from a peer that is not a trusted proxy is never read at all, so
no client can name its own address.

Only the configured header is read: a proxy that writes ``Forwarded`` passes a
client's own ``X-Forwarded-For`` through untouched, and reading that would let
the client choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal, TypeAlias

from aiohttp import web

IpAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"
IpNetwork: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

# The unknown peer of a request with no transport (an in-memory test client).
UNKNOWN = "unknown"


def parse_address(text: str) -> IpAddress | None:
    """An address as proxies write it: bare, ``[v6]``, with a port (``a.b.c.d:p``,
    ``[v6]:p``), or quoted; IPv4-mapped IPv6 is its IPv4. ``None`` for anything
    else (``unknown``, an obfuscated ``_hidden`` identifier, garbage)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(cidrs: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``ValueError`` for an entry that is not an address or a network."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def forwarded_for(values: Sequence[str], header: ForwardedHeader) -> list[str]:
    """The hops a proxy header lists, left (the first) to right (the nearest),
    over every instance of the header in order."""
    hops: list[str] = []
    for value in values:
        if header == "x-forwarded-for":
            hops.extend(part.strip() for part in value.split(",") if part.strip())
            continue
        for element in _split_outside_quotes(value, ","):
            found = ""  # an element without for= is a hop of unknown address
            for pair in _split_outside_quotes(element, ";"):
                name, _, param = pair.partition("=")
                if name.strip().lower() == "for":
                    found = param.strip()
            hops.append(found)
    return hops


class ClientAddresses:
    """The client address of a request, under the trusted proxies of the settings."""

    def __init__(
        self, trusted_proxies: Iterable[str] = (), header: ForwardedHeader = "x-forwarded-for"
    ) -> None:
        self.trusted = parse_networks(trusted_proxies)
        self.header = header

    def is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str | None, forwarded: Sequence[str] = ()) -> str:
        """The client address from the peer and the proxy header's values."""
        nearest = parse_address(peer) if peer else None
        if nearest is None:
            return peer or UNKNOWN
        if not self.trusted or not self.is_trusted(nearest):
            return str(nearest)
        for hop in reversed(forwarded_for(forwarded, self.header)):
            address = parse_address(hop)
            if address is None:
                # A trusted proxy wrote something that is no address: the
                # nearest trusted hop is the best name we have (never what
                # lies further left, which a client may have written).
                return str(nearest)
            if not self.is_trusted(address):
                return str(address)
            nearest = address
        return str(nearest)  # every hop is a proxy of ours: the first one

    def of(self, request: web.BaseRequest) -> str:
        forwarded = request.headers.getall(self.header, []) if self.trusted else []
        # The TCP peer (Pinhole never installs aiohttp's forwarded-header
        # helpers, which would rewrite request.remote).
        peer = request.remote
        return self.resolve(peer, forwarded)


def address_subject(address: str) -> str:
    """What a per-address limit counts: an IPv4 address, or an IPv6 address's
    /64 (one customer's network: a host picks any address in it at will)."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address
