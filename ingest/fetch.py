"""Upload by URL: fetch an image on the server without reaching internal addresses.

Image proxies are where SSRF bugs live (imgproxy allowed private addresses by
default and shipped a 0.0.0.0 bypass, CVE-2025-24354), so each hop is checked
before any socket is opened:

1. The URL is parsed once, with yarl (what aiohttp itself parses with, so the
   host checked is the host connected to): http or https, a host, no userinfo,
   on the allowlist if one is configured.
2. The host is resolved once (``getaddrinfo``) and every address must be
   public (``address_refusal``); a literal address is checked as it is.
3. The connection may use only those addresses: the session's resolver
   (``PinnedResolver``) answers from them and never looks anything up, so a
   DNS answer that changes between the check and the connect (rebinding)
   changes nothing; the Host header and TLS SNI stay the URL's name. The
   socket factory checks each address once more as its socket is made.
4. Redirects are not followed by aiohttp: each ``Location`` goes through 1-3
   again, at most ``max_redirects`` times.

The body streams into the upload's spool, capped like an upload's, with a
connect timeout, a read-idle timeout and a total one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from metrics.definitions import URL_FETCHES
from pinhole.errors import (
    InvalidUrl,
    PayloadTooLarge,
    PinholeError,
    UrlAddressNotAllowed,
    UrlFetchFailed,
    UrlFetchTimeout,
    UrlNotAllowed,
    UrlTooManyRedirects,
    UrlUnresolvable,
)
from pinhole.netguard import Address, address_refusal, literal_address, looks_numeric
from pinhole.settings import UrlFetch

MAX_URL_LENGTH = 2048
CHUNK_BYTES = 256 * 1024
USER_AGENT = "Pinhole-URL-Fetch/1 (+https://github.com/pinhole)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _check_address(host: str, address: Address, config: UrlFetch) -> None:
    why = address_refusal(address, allow_loopback=config.allow_loopback)
    if why is not None:
        raise UrlAddressNotAllowed(
            f"The url's host {host[:100]} is refused: {address} is not allowed ({why})."
        )


def _host_allowed(host: str, allow_hosts: list[str]) -> bool:
    if not allow_hosts:
        return True
    for pattern in allow_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def parse_url(text: object, config: UrlFetch) -> URL:
    """The URL, checked for everything but its addresses."""
    if not isinstance(text, str) or not text or len(text) > MAX_URL_LENGTH:
        raise InvalidUrl(f"url is an absolute http(s) URL of at most {MAX_URL_LENGTH} characters.")
    try:
        url = URL(text)
        port = url.port
    except ValueError:
        raise InvalidUrl("url is not a valid URL.") from None
    return _check_url(url, port, config)


def _check_url(url: URL, port: int | None, config: UrlFetch) -> URL:
    if url.scheme not in ("http", "https"):
        raise UrlNotAllowed(f"Only http and https URLs are fetched, not {url.scheme[:20]!r}.")
    host = (url.raw_host or "").lower()
    if not url.is_absolute() or not host or port is None:
        raise InvalidUrl("url is an absolute http(s) URL with a host name.")
    if url.user is not None or url.password is not None:
        raise UrlNotAllowed("URLs with credentials (user:password@) are not fetched.")
    if not _host_allowed(host.rstrip("."), config.allow_hosts):
        raise UrlNotAllowed(f"The host {host[:100]} is not on the allowlist of fetched hosts.")
    return url.with_fragment(None)


async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The one name lookup of a hop (tests replace it to map their names)."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


class PinnedResolver(AbstractResolver):
    """Answers with the addresses checked for each host, and never looks up."""

    def __init__(self) -> None:
        self._pinned: dict[str, list[ResolveResult]] = {}

    def pin(self, host: str, results: list[ResolveResult]) -> None:
        self._pinned[host] = results
        self._pinned[host.rstrip(".")] = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = self._pinned.get(host)
        if not results:
            raise OSError(f"{host} was not resolved and checked before connecting")
        return [{**r, "port": port} for r in results]

    async def close(self) -> None:
        return None


async def resolve_checked(url: URL, config: UrlFetch) -> list[ResolveResult]:
    """Every address of the URL's host, each one checked; refused before any
    socket is opened. A literal address is checked without a lookup."""
    host = url.raw_host or ""
    port = url.port or 0
    literal = literal_address(host)
    if literal is not None:
        _check_address(host, literal, config)
        return []
    if looks_numeric(host):
        # 2130706433, 0x7f.1, 127.1, 0177.0.0.1: a resolver reads these as
        # addresses (inet_aton); a real host name never looks like one.
        raise UrlAddressNotAllowed(
            f"The url's host {host[:100]} is an address in a non-standard form."
        )
    try:
        infos = await getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError):
        raise UrlUnresolvable(f"The host {host[:100]} does not resolve.") from None
    results: list[ResolveResult] = []
    for family, _type, proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        _check_address(host, address, config)
        results.append(
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": family,
                "proto": proto,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        )
    if not results:
        raise UrlUnresolvable(f"The host {host[:100]} has no addresses.")
    return results


def _guarded_socket(config: UrlFetch) -> Any:
    """A socket factory that refuses, once more, any address not allowed."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if address_refusal(ipaddress.ip_address(sockaddr[0]), allow_loopback=config.allow_loopback):
            raise OSError(f"refused to open a socket to {sockaddr[0]}")
        return socket.socket(family=family, type=type_, proto=proto)

    return make


class Fetch:
    """One fetch: a session whose every connection goes to a checked address."""

    def __init__(self, config: UrlFetch, max_bytes: int) -> None:
        self.config = config
        self.max_bytes = max_bytes
        self.resolver = PinnedResolver()
        self.hops: list[str] = []

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,
            force_close=True,
            limit=1,
            socket_factory=_guarded_socket(self.config),
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.config.connect_timeout_seconds,
                sock_read=self.config.read_idle_timeout_seconds,
            ),
            trust_env=False,  # never a proxy from the environment
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # images are compressed: a gzip body is a bomb
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
        )

    async def _open(self, session: aiohttp.ClientSession, url: URL) -> aiohttp.ClientResponse:
        for hop in range(self.config.max_redirects + 1):
            results = await resolve_checked(url, self.config)
            if results:
                self.resolver.pin(url.raw_host or "", results)
            self.hops.append(str(url))
            response = await session.get(url, allow_redirects=False)
            if response.status not in _REDIRECTS:
                if response.status != 200:
                    response.release()
                    raise UrlFetchFailed(f"The url answered HTTP {response.status}, not 200.")
                return response
            location = response.headers.get("Location")
            response.release()
            if not location or hop == self.config.max_redirects:
                break
            try:
                target = url.join(URL(location))
                port = target.port
            except ValueError:
                raise UrlFetchFailed("The url redirected to an invalid URL.") from None
            url = _check_url(target, port, self.config)
        if not location:
            raise UrlFetchFailed("The url redirected without a Location.")
        raise UrlTooManyRedirects(
            f"The url redirected more than {self.config.max_redirects} times."
        )

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        if response.content_length is not None and response.content_length > self.max_bytes:
            raise PayloadTooLarge(
                f"The image at the url exceeds the limit of {self.max_bytes} bytes."
            )
        while chunk := await response.content.read(CHUNK_BYTES):
            yield chunk

    @contextlib.asynccontextmanager
    async def body(self, url: URL) -> AsyncIterator[AsyncIterator[bytes]]:
        """The body's chunks, within the total timeout; every failure a ``PinholeError``."""
        result = "fetched"
        try:
            async with (
                asyncio.timeout(self.config.total_timeout_seconds),
                self._session() as session,
            ):
                response = await self._open(session, url)
                try:
                    yield self._chunks(response)
                finally:
                    response.release()
        except TimeoutError:
            result = UrlFetchTimeout.code
            raise UrlFetchTimeout(
                f"The image at the url did not arrive within {self.config.total_timeout_seconds:g} "
                "seconds."
            ) from None
        except PinholeError as exc:
            result = exc.code
            raise
        except (aiohttp.ClientError, OSError) as exc:
            result = UrlFetchFailed.code
            raise UrlFetchFailed(
                f"The image at the url could not be fetched: {type(exc).__name__}."
            ) from None
        finally:
            URL_FETCHES.labels(result).inc()
