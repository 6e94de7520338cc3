"""Session-scoped real services shared by every suite (arq-style)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from tests.support.mariadb import MariaDbServer, start_mariadb
from tests.support.services import (
    MotoS3,
    RedisServer,
    TansuBroker,
    start_moto,
    start_redis,
    start_tansu,
)

_names = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    broker = start_tansu()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_b() -> Iterator[MotoS3]:
    """A second S3 server, so shards can live on two endpoints, not only two buckets."""
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDbServer]:
    """A MariaDB server (Debian's mariadb-server) for the record store; tests make
    their own database on it (``create_database``)."""
    server = start_mariadb()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def mariadb_b() -> Iterator[MariaDbServer]:
    """A second MariaDB server, so record shards can live on two servers."""
    server = start_mariadb()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def mariadb_factory() -> Iterator[Callable[[], MariaDbServer]]:
    """Fresh MariaDB servers for tests that kill, hang or stop one (the shared
    ones must stay up); each is removed at the end of the session."""
    started: list[MariaDbServer] = []

    def start() -> MariaDbServer:
        server = start_mariadb()
        started.append(server)
        return server

    yield start
    for server in started:
        server.remove()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: buckets, topics, groups, key prefixes."""
    return f"pinhole-t{next(_names)}-{abs(hash(request.node.nodeid)) % 10**8}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for talking to the servers a test starts (suites with a
    tighter budget define their own)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s
