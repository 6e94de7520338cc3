"""One HotCache contract, run against every adapter, plus each adapter's own promises.

Redis tests use a real ``redis-server``: the outage tests start their own so that
stopping it cannot disturb the session server other suites share. The cluster
runs are against a real three-master Redis Cluster of ``redis-server`` processes.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import TypeVar

import pytest
from redis.asyncio import Redis
from redis.exceptions import MovedError

from pinhole.cache.memory import MemoryHotCache
from pinhole.cache.redis import RedisHotCache, bounded
from pinhole.cache.redis_cluster import cluster_from_url
from pinhole.errors import CacheUnavailable
from pinhole.ports import HotCache
from tests.support.latency_proxy import latency_proxies
from tests.support.services import (
    RedisClusterNodes,
    RedisServer,
    free_port,
    start_redis,
    start_redis_cluster,
)

# The outage tests' adapter timeout (the production default), and a bound on
# one call that means "does not hang", not a benchmark: four times the call's
# deadline (twice the timeout), so a loaded machine does not trip it.
TIMEOUT = 0.25
NO_HANG = 2.0
# The contract tests check what a call returns, not how fast: on a loaded CI
# machine a 0.25 s socket timeout turned a slow read into a CacheUnavailable.
CONTRACT_TIMEOUT = 5.0
# How long a check may wait for a cluster to answer after a missed deadline.
SETTLE = 15.0

_T = TypeVar("_T")

_rng = random.Random(20240611)
BINARY_VALUES = {
    "every-byte": bytes(range(256)),
    "nul-and-crlf": b"\x00\r\n\x00*1\r\n$3\r\n",
    "empty": b"",
    "200kb": _rng.randbytes(200 * 1024),
}


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[HotCache]:
    adapter: HotCache
    if request.param == "memory":
        adapter = MemoryHotCache(8 * 1024 * 1024, max_object_bytes=1024 * 1024)
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        adapter = RedisHotCache.from_url(server.url, CONTRACT_TIMEOUT)
    else:
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        adapter = RedisHotCache.from_url(cluster.url, CONTRACT_TIMEOUT)
    yield adapter
    await adapter.close()


async def once_available(call: Callable[[], Awaitable[_T]], within: float = SETTLE) -> _T:
    """``call()``'s result, retried while it raises ``CacheUnavailable``.

    For set-up and for "it serves again" checks, where a 0.25 s timeout missed
    on a loaded CI machine is a miss in production but would fail the test: a
    cluster client's first call loads the slot map and the server's command
    table (about 25 KB) within one deadline, and one missed deadline puts a node
    in a second's cooldown. Retrying keeps timing out of these checks without
    lengthening the timeout under test."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await call()
        except CacheUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
def key(unique_name: str) -> Callable[[str], str]:
    """Keys under a per-test prefix, so tests sharing one Redis never collide."""
    return lambda name: f"{unique_name}:{name}"


# --- Contract: every adapter. ------------------------------------------------


def test_implements_the_port(cache: HotCache) -> None:
    assert isinstance(cache, HotCache)


async def test_miss_is_none(cache: HotCache, key: Callable[[str], str]) -> None:
    assert await cache.get(key("absent")) is None


@pytest.mark.parametrize("value", BINARY_VALUES.values(), ids=BINARY_VALUES.keys())
async def test_roundtrip_keeps_bytes_exact(
    cache: HotCache, key: Callable[[str], str], value: bytes
) -> None:
    await cache.set(key("v"), value, ttl_seconds=60)
    assert await cache.get(key("v")) == value


async def test_overwrite_replaces_value(cache: HotCache, key: Callable[[str], str]) -> None:
    await cache.set(key("v"), b"first, and longer than the second", ttl_seconds=60)
    await cache.set(key("v"), b"second", ttl_seconds=60)
    assert await cache.get(key("v")) == b"second"


async def test_delete_several_keys_ignores_missing(
    cache: HotCache, key: Callable[[str], str]
) -> None:
    for name in ("a", "b", "c"):
        await cache.set(key(name), name.encode(), ttl_seconds=60)
    await cache.delete(key("a"), key("missing"), key("c"))
    assert await cache.get(key("a")) is None
    assert await cache.get(key("b")) == b"b"
    assert await cache.get(key("c")) is None
    await cache.delete()
    await cache.delete(key("missing"))


async def test_expired_entry_is_a_miss(cache: HotCache, key: Callable[[str], str]) -> None:
    await cache.set(key("long"), b"stays", ttl_seconds=60)
    # Read right after the write: the one-second TTL is running.
    await cache.set(key("short"), b"soon gone", ttl_seconds=1)
    assert await cache.get(key("short")) == b"soon gone"
    await asyncio.sleep(1.2)
    assert await cache.get(key("short")) is None
    assert await cache.get(key("long")) == b"stays"


@pytest.mark.parametrize("ttl", [0, -1])
async def test_non_positive_ttl_is_a_caller_error(
    cache: HotCache, key: Callable[[str], str], ttl: int
) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await cache.set(key("v"), b"x", ttl_seconds=ttl)


async def test_ping(cache: HotCache) -> None:
    await cache.ping()


# --- Memory: LRU by bytes. ---------------------------------------------------


def test_memory_evicts_least_recently_used_by_bytes() -> None:
    lru = MemoryHotCache(max_bytes=300)
    for name in ("a", "b", "c"):
        lru.set_nowait(name, name.encode() * 100, 60)
    assert lru.bytes_used == 300
    # Reading "a" makes "b" the least recently used, so "b" goes first.
    assert lru.get_nowait("a") == b"a" * 100
    lru.set_nowait("d", b"d" * 100, 60)
    assert lru.get_nowait("b") is None
    assert [lru.get_nowait(k) is not None for k in ("a", "c", "d")] == [True] * 3
    assert (len(lru), lru.bytes_used) == (3, 300)


def test_memory_evicts_as_many_entries_as_a_big_value_needs() -> None:
    lru = MemoryHotCache(max_bytes=300)
    for name in ("a", "b", "c"):
        lru.set_nowait(name, b"x" * 100, 60)
    lru.set_nowait("big", b"y" * 150, 60)
    assert lru.get_nowait("a") is None
    assert lru.get_nowait("b") is None
    assert lru.get_nowait("c") == b"x" * 100
    assert lru.get_nowait("big") == b"y" * 150
    assert (len(lru), lru.bytes_used) == (2, 250)


def test_memory_refuses_objects_over_either_bound() -> None:
    lru = MemoryHotCache(max_bytes=1000, max_object_bytes=100)
    lru.set_nowait("small", b"s" * 100, 60)
    lru.set_nowait("over-object-bound", b"o" * 101, 60)
    assert lru.get_nowait("over-object-bound") is None
    whole = MemoryHotCache(max_bytes=100)
    whole.set_nowait("kept", b"k" * 50, 60)
    whole.set_nowait("over-total-bound", b"t" * 101, 60)
    assert whole.get_nowait("over-total-bound") is None
    # A refused value must not evict what was there to make room for it.
    assert whole.get_nowait("kept") == b"k" * 50
    assert (len(lru), lru.bytes_used) == (1, 100)


def test_memory_refused_overwrite_drops_the_stale_value() -> None:
    lru = MemoryHotCache(max_bytes=1000, max_object_bytes=100)
    lru.set_nowait("k", b"old", 60)
    lru.set_nowait("k", b"n" * 101, 60)
    assert lru.get_nowait("k") is None
    assert (len(lru), lru.bytes_used) == (0, 0)


async def test_memory_bytes_used_follows_overwrite_and_delete() -> None:
    lru = MemoryHotCache(max_bytes=1000)
    await lru.set("a", b"a" * 100, ttl_seconds=60)
    await lru.set("b", b"b" * 50, ttl_seconds=60)
    assert lru.bytes_used == 150
    await lru.set("a", b"a" * 300, ttl_seconds=60)
    assert lru.bytes_used == 350
    await lru.set("a", b"a" * 10, ttl_seconds=60)
    assert lru.bytes_used == 60
    await lru.delete("a", "missing")
    assert (len(lru), lru.bytes_used) == (1, 50)
    await lru.delete("b")
    assert (len(lru), lru.bytes_used) == (0, 0)


async def test_memory_expired_entry_frees_its_bytes_when_read() -> None:
    lru = MemoryHotCache(max_bytes=1000)
    lru.set_nowait("k", b"x" * 100, 1)
    await asyncio.sleep(1.2)
    assert lru.get_nowait("k") is None
    assert (len(lru), lru.bytes_used) == (0, 0)


def test_memory_zero_budget_stores_nothing() -> None:
    off = MemoryHotCache(max_bytes=0)
    off.set_nowait("empty", b"", 60)
    off.set_nowait("k", b"x", 60)
    assert (len(off), off.bytes_used) == (0, 0)


async def test_memory_nowait_and_async_share_one_store() -> None:
    lru = MemoryHotCache(max_bytes=1000)
    lru.set_nowait("sync", b"1", 60)
    await lru.set("async", b"2", ttl_seconds=60)
    assert await lru.get("sync") == b"1"
    assert lru.get_nowait("async") == b"2"
    lru.delete_nowait("sync")
    assert await lru.get("sync") is None


# --- Redis: outages cost about the timeout, and heal by themselves. ------------


@pytest.fixture
def own_redis() -> Iterator[list[RedisServer]]:
    """A private redis-server; a list so a test can swap in a restarted one."""
    servers = [start_redis()]
    yield servers
    for server in servers:
        server.proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
        server.stop()


async def _assert_unavailable(cache: RedisHotCache, key: str) -> None:
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "GET": lambda: cache.get(key),
        "SET": lambda: cache.set(key, b"v", ttl_seconds=60),
        "DEL": lambda: cache.delete(key),
        "PING": cache.ping,
    }
    for command, call in calls.items():
        # A hang shows up as TimeoutError, which pytest.raises lets through.
        with pytest.raises(CacheUnavailable, match=f"redis {command} failed"):
            async with asyncio.timeout(NO_HANG):
                await call()


async def test_redis_down_then_back_heals_the_same_instance(
    own_redis: list[RedisServer], key: Callable[[str], str]
) -> None:
    first = own_redis[0]
    cache = RedisHotCache.from_url(first.url, TIMEOUT)
    try:
        await cache.set(key("k"), b"before", ttl_seconds=60)
        first.stop()
        await _assert_unavailable(cache, key("k"))
        own_redis.append(start_redis(first.port))
        # A fresh server has no data: a miss, not an error, then normal service.
        assert await cache.get(key("k")) is None
        await cache.set(key("k"), b"after", ttl_seconds=60)
        assert await cache.get(key("k")) == b"after"
    finally:
        await cache.close()


async def test_redis_first_call_after_a_silent_restart_succeeds(
    own_redis: list[RedisServer], key: Callable[[str], str]
) -> None:
    """The pooled socket is dead after a restart nobody saw; the caller must not pay."""
    first = own_redis[0]
    cache = RedisHotCache.from_url(first.url, TIMEOUT)
    try:
        await cache.set(key("k"), b"before", ttl_seconds=60)
        first.stop()
        own_redis.append(start_redis(first.port))
        assert await cache.get(key("k")) is None
    finally:
        await cache.close()


async def test_redis_stalled_server_costs_about_the_timeout(
    own_redis: list[RedisServer], key: Callable[[str], str]
) -> None:
    server = own_redis[0]
    cache = RedisHotCache.from_url(server.url, TIMEOUT)
    try:
        await cache.set(key("k"), b"v", ttl_seconds=60)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            await _assert_unavailable(cache, key("k"))
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert await cache.get(key("k")) == b"v"
    finally:
        await cache.close()


async def test_redis_on_a_closed_port_is_unavailable(key: Callable[[str], str]) -> None:
    cache = RedisHotCache.from_url(f"redis://127.0.0.1:{free_port()}/0", TIMEOUT)
    try:
        await _assert_unavailable(cache, key("k"))
    finally:
        await cache.close()


async def test_redis_tls_to_a_plain_server_is_unavailable(
    redis_server: RedisServer, key: Callable[[str], str]
) -> None:
    """rediss:// goes through the same call; its TLS failures are translated too."""
    url = redis_server.url.replace("redis://", "rediss://", 1)
    cache = RedisHotCache.from_url(url, TIMEOUT)
    try:
        with pytest.raises(CacheUnavailable):
            async with asyncio.timeout(NO_HANG):
                await cache.get(key("k"))
    finally:
        await cache.close()


async def test_redis_refuses_a_decoding_client(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisHotCache(client)
    finally:
        await client.aclose()


# --- Redis Cluster: a dead master costs its own slots, nothing else. -----------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://", "no cluster nodes"),
        ("redis+cluster://127.0.0.1", "is not host:port"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:x", "is not host:port"),
        ("redis+cluster://127.0.0.1:7000/3", "has no databases"),
        ("redis://127.0.0.1:7000", "not a Redis Cluster URL"),
    ],
)
def test_cluster_url_errors_are_caller_errors(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cluster_from_url(url, TIMEOUT)


async def test_cluster_url_names_every_startup_node_and_credentials() -> None:
    client = cluster_from_url(
        "rediss+cluster://user:p%40ss@10.0.0.1:7000,[::1]:7001,host-c:7002", TIMEOUT
    )
    try:
        nodes = {(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()}
        assert nodes == {("10.0.0.1", 7000), ("::1", 7001), ("host-c", 7002)}
        kwargs = client.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("user", "p@ss")
        assert kwargs["connection_class"].__name__ == "SSLConnection"
    finally:
        await client.aclose()


async def test_cluster_refuses_a_decoding_client(redis_cluster: RedisClusterNodes) -> None:
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(
        f"redis://127.0.0.1:{redis_cluster.nodes[0].port}", decode_responses=True
    )
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisHotCache(client)
    finally:
        await client.aclose()


async def test_cluster_master_killed_under_load_costs_its_keys_not_errors(
    key: Callable[[str], str],
) -> None:
    """Concurrent gets and sets while one master is SIGKILLed: every failure is a
    ``CacheUnavailable`` (which the tiers turn into a miss), keys on the surviving
    masters keep hitting, and keys on the dead one fail fast rather than hang."""
    cluster = start_redis_cluster(masters=3)
    cache = RedisHotCache.from_url(cluster.url, TIMEOUT)
    try:
        await once_available(cache.ping)  # the client's first call loads the slot map
        keys = [key(f"k{i}") for i in range(60)]
        for k in keys:  # set-up: each first contact with a master opens a connection
            await once_available(partial(cache.set, k, k.encode(), ttl_seconds=60))
        owner = {k: await _owner_port(cluster, k) for k in keys}
        victim = cluster.nodes[1]
        on_victim = [k for k in keys if owner[k] == victim.port]
        survivors = [k for k in keys if owner[k] != victim.port]
        assert on_victim
        assert survivors

        outcomes: list[str] = []

        async def hammer(k: str) -> None:
            for _ in range(10):
                try:
                    async with asyncio.timeout(NO_HANG):
                        value = await cache.get(k)
                    async with asyncio.timeout(NO_HANG):
                        await cache.set(k, k.encode(), ttl_seconds=60)
                    outcomes.append("hit" if value == k.encode() else "miss")
                except CacheUnavailable:
                    outcomes.append("unavailable")
                await asyncio.sleep(0.01)

        load = asyncio.gather(*(hammer(k) for k in keys))
        await asyncio.sleep(0.05)
        victim.proc.kill()
        victim.proc.wait()
        reloads_before = await _slot_map_reloads(cluster, victim)
        await load  # any other exception (or a hang, as TimeoutError) fails here
        failures = outcomes.count("unavailable")
        assert failures > 0
        # The dead node's keys fail fast (NodeCooldown) instead of each failure
        # reloading the slot map, a reload every other command would wait for.
        reloads = await _slot_map_reloads(cluster, victim) - reloads_before
        assert reloads < failures / 4, (reloads, failures)

        for k in survivors:
            assert await once_available(partial(cache.get, k)) == k.encode(), k
        for k in on_victim:
            with pytest.raises(CacheUnavailable):
                async with asyncio.timeout(NO_HANG):
                    await cache.get(k)
        # Readiness: the cluster still answers (PING goes to a live node), once
        # the slot-map reload the dead node's failures asked for is done.
        await once_available(cache.ping)
    finally:
        await cache.close()
        cluster.stop()


async def test_cluster_slot_map_load_outlives_a_deadline_shorter_than_it(
    key: Callable[[str], str],
) -> None:
    """On a slow link the slot-map load (eight round trips here) takes longer
    than one call's deadline. The calls that wait for it fail, but the load
    goes on without them, and the cache serves afterwards. When a deadline
    cancelled the load, every call started it again and none was ever served."""
    round_trip = 0.2
    cluster = start_redis_cluster(masters=3)
    try:
        async with latency_proxies([n.port for n in cluster.nodes], round_trip / 2) as proxies:
            await asyncio.to_thread(cluster.announce, [p.port for p in proxies])
            url = "redis+cluster://" + ",".join(f"127.0.0.1:{p.port}" for p in proxies)
            # A call on a new connection costs four round trips (the handshake),
            # so six fit a deadline; the load needs about eight.
            deadline = 6 * round_trip
            cache = RedisHotCache(
                cluster_from_url(url, timeout_seconds=2 * round_trip),
                deadline_seconds=deadline,
            )
            try:
                with pytest.raises(CacheUnavailable):
                    await cache.set(key("k"), b"v", ttl_seconds=60)
                await once_available(partial(cache.set, key("k"), b"v", ttl_seconds=60))
                assert await once_available(partial(cache.get, key("k"))) == b"v"
            finally:
                await cache.close()
    finally:
        cluster.stop()


async def _owner_port(cluster: RedisClusterNodes, key: str) -> int:
    """The port of the master that holds ``key``: the node that does not redirect."""
    for node in cluster.nodes:
        client = Redis(port=node.port)
        try:
            await client.exists(key)
            return node.port
        except MovedError:
            continue
        finally:
            await client.aclose()
    raise AssertionError(f"no node holds {key}")


async def _slot_map_reloads(cluster: RedisClusterNodes, dead: RedisServer) -> int:
    """CLUSTER SLOTS calls the surviving nodes have answered (the client's reloads)."""
    total = 0
    for node in cluster.nodes:
        if node is dead:
            continue
        client = Redis(port=node.port)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        total += int(stats.get("cmdstat_cluster|slots", {}).get("calls", 0))
    return total


@pytest.mark.parametrize(
    "leak",
    [
        AttributeError("'NoneType' object has no attribute 'writelines'"),
        TypeError("'NoneType' object is not callable"),
    ],
)
async def test_a_write_on_a_torn_down_connection_is_cache_unavailable(leak: Exception) -> None:
    """redis-py 8.1 leaks these from a write racing a closed connection (its
    issues #3546, #4287); seen here when a cluster master is killed under load.
    The port promises CacheUnavailable for any failure, so the edge falls back."""

    async def write_on_closed_transport() -> None:
        raise leak

    with pytest.raises(CacheUnavailable, match=type(leak).__name__):
        await bounded("GET", 1.0, write_on_closed_transport)
