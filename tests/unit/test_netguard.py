"""pinhole.netguard: which addresses a server-side request may reach, and that a
refused one is refused before any connection is made.

No test here sends a packet anywhere: literal addresses are judged without a
lookup, names are "resolved" by a patched getaddrinfo, and every socket connect
is watched so that one to a refused address fails the test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
import pytest

from pinhole.netguard import AddressRefused, address_allowed, check_url, guarded_session

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # the cloud metadata address
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "240.0.0.1",  # reserved
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::10.0.0.1",  # IPv4-compatible (deprecated)
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:db8::1",  # documentation
    "::ffff:93.184.215.14",  # IPv4-mapped, even of a public address: a v4 connection
    "fec0::1",  # site-local (deprecated)
]
ALLOWED = ["93.184.215.14", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_the_test_setting_admits_loopback_only(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_loopback=True)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.1:8080/",
        "https://[::1]/",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.0.0.1/",
        "http://127.1/",
    ],
)
def test_literal_and_numeric_hosts_are_refused_without_a_lookup(url: str) -> None:
    with pytest.raises(AddressRefused):
        check_url(url)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http:///nohost", "x"]
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(ValueError, match=r"only http|no host"):
        check_url(url)


@pytest.fixture
async def watched_connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address any socket in this process connects to; a connect to one
    that is not loopback fails the test before it leaves the machine."""
    seen: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        seen.append(address)
        host = address[0] if isinstance(address, tuple) else address
        if not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a connection to {address} was attempted")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    loop = asyncio.get_running_loop()
    real_sock_connect = loop.sock_connect

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        check(address)
        await real_sock_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    return seen


async def test_a_name_that_resolves_inside_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, watched_connects: list[Any]
) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        assert host == "rebinding.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    async with guarded_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as failed:
            await session.get("http://rebinding.test/", allow_redirects=False)
    assert isinstance(failed.value.os_error, AddressRefused)
    assert "10.9.8.7" in str(failed.value.os_error)
    assert watched_connects == []


async def test_a_name_with_one_internal_answer_among_allowed_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch, watched_connects: list[Any]
) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    async with guarded_session(allow_loopback=True) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as failed:
            await session.get("http://mixed.test/", allow_redirects=False)
    assert isinstance(failed.value.os_error, AddressRefused)
    assert watched_connects == []


async def test_the_connection_goes_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, watched_connects: list[Any]
) -> None:
    """Loopback allowed for the test: the one lookup's answer is where aiohttp
    connects, with no second lookup."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    loop = asyncio.get_running_loop()

    lookups: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    try:
        async with (
            guarded_session(allow_loopback=True) as session,
            session.get(f"http://mixed.test:{server.port}/") as resp,
        ):
            assert await resp.text() == "ok"
    finally:
        await server.close()
    assert {address[0] for address in watched_connects} == {"127.0.0.1"}
    assert lookups == ["mixed.test"]
