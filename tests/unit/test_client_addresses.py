"""The client address rate limits count by: the peer, unless the peer is a
trusted proxy, and then the right-most untrusted hop of the proxies' header.
A header from anyone else is never read (pinhole/clients.py)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from pinhole.clients import ClientAddresses, address_subject, parse_address
from pinhole.settings import Settings

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    addresses = ClientAddresses()
    assert addresses.resolve("198.51.100.7", ["1.2.3.4"]) == "198.51.100.7"


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    addresses = ClientAddresses(PROXIES)
    assert addresses.resolve("198.51.100.7", ["10.0.0.1, 1.2.3.4"]) == "198.51.100.7"


def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() -> None:
    addresses = ClientAddresses(PROXIES)
    # The client sent "6.6.6.6" itself; the first proxy appended what it saw.
    assert addresses.resolve("10.0.0.2", ["6.6.6.6, 203.0.113.9"]) == "203.0.113.9"
    # Two proxies of ours in a row, and the header split over two lines.
    assert addresses.resolve("10.0.0.2", ["6.6.6.6, 203.0.113.9", "10.1.1.1"]) == "203.0.113.9"
    # A trusted proxy with no header: the proxy is all we know.
    assert addresses.resolve("10.0.0.2", []) == "10.0.0.2"
    # Every hop is ours: the first one.
    assert addresses.resolve("10.0.0.2", ["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"


def test_garbage_from_a_trusted_proxy_never_lets_what_lies_left_of_it_through() -> None:
    addresses = ClientAddresses(PROXIES)
    assert addresses.resolve("10.0.0.2", ["6.6.6.6, unknown"]) == "10.0.0.2"
    assert addresses.resolve("10.0.0.2", ["6.6.6.6, _hidden, 10.1.1.1"]) == "10.1.1.1"


def test_ports_brackets_ipv6_and_mapped_ipv4() -> None:
    addresses = ClientAddresses(PROXIES)
    assert addresses.resolve("10.0.0.2", ["203.0.113.9:4711"]) == "203.0.113.9"
    assert addresses.resolve("10.0.0.2", ["[2001:db8::17]:4711"]) == "2001:db8::17"
    assert addresses.resolve("2001:db8:ffff::1", ["2001:db8::17"]) == "2001:db8::17"
    assert addresses.resolve("::ffff:198.51.100.7") == "198.51.100.7"
    assert parse_address("not-an-address") is None


def test_the_forwarded_header_when_that_is_what_the_proxies_write() -> None:
    addresses = ClientAddresses(PROXIES, "forwarded")
    header = 'for=6.6.6.6;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.2'
    assert addresses.resolve("10.0.0.2", [header]) == "2001:db8:cafe::17"
    assert addresses.resolve("10.0.0.2", ['for="_gazonk"']) == "10.0.0.2"


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert address_subject("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    assert address_subject("198.51.100.7") == "198.51.100.7"


def _request(peer: str, headers: dict[str, str]) -> web.Request:
    return make_mocked_request("GET", "/", headers=headers).clone(remote=peer)


def test_a_request_through_the_trusted_proxies() -> None:
    addresses = ClientAddresses(["127.0.0.1/32"])
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    assert addresses.of(_request("127.0.0.1", spoofed)) == "203.0.113.9"
    assert addresses.of(_request("192.0.2.1", spoofed)) == "192.0.2.1"
    # The other header is not read: a proxy writing one passes the other through.
    forwarded = {"Forwarded": "for=203.0.113.9"}
    assert addresses.of(_request("127.0.0.1", forwarded)) == "127.0.0.1"


def test_trusted_proxies_are_checked_in_settings() -> None:
    assert Settings(trusted_proxies=["10.0.0.0/8", "192.0.2.7"]).trusted_proxies
    with pytest.raises(ValueError, match="trusted proxy"):
        Settings(trusted_proxies=["10.0.0.0/99"])
