"""Redis Cluster clients from ``redis+cluster://`` URLs (redis-py's asyncio cluster client).

``redis+cluster://[user:password@]host1:7000,host2:7001`` names startup nodes;
the client discovers the rest of the cluster from any one of them. TLS is
``rediss+cluster://``. A cluster has no databases, so a path is refused.

The same outage rules as one Redis apply (see ``pinhole.cache.redis``), with one
cluster-specific choice: ``require_full_coverage=False``. When a master dies
and nothing replaces it, its slots are unserved, and the client must keep
serving the slots of the masters that are alive (a miss on the dead ones, not
an error on all). The servers need the same: ``cluster-require-full-coverage no``,
or every node answers CLUSTERDOWN once one master is gone.

And one measured one: ``NodeCooldown``. redis-py reloads the whole slot map (and
the server's command table) after every connection error, and every command
waits for that reload. With one master dead under load, that made each command
about 20x slower, healthy keys included (p50 7 ms -> 150 ms on this machine),
close to the deadline. So after a connection error or timeout on a node, its
keys fail fast for a second, and then one call probes it again.

And one that keeps a deadline from starving the client: ``LoadInBackground``.
The slot map and command table load within whichever call finds them missing,
so that call's deadline used to cancel the load, and redis-py then drops every
connection it had opened. When a load takes longer than one deadline (the
first call on a loaded machine, a slow link after a failover) every call
cancelled the one before it, and the cache never served again until the load
got lucky. Now the load runs in a task of its own: a caller stops waiting at
its deadline, the load goes on, and later calls find the map loaded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from pinhole.errors import CacheUnavailable

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _split_url(url: str) -> tuple[bool, str | None, str | None, list[ClusterNode]]:
    """``(tls, username, password, startup nodes)``. urlsplit cannot parse a
    comma-separated host list (``.port`` raises), so this parses it by hand."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {url!r}")
    netloc, _, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0]
    if path.split("?", 1)[0] not in ("", "0"):
        raise ValueError(f"a Redis Cluster has no databases, so no /{path} in {url!r}")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = []
    for hostport in filter(None, netloc.split(",")):
        host, colon, port = hostport.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"cluster node {hostport!r} in {url!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError(f"no cluster nodes in {url!r}")
    return scheme.lower() == "rediss+cluster", username, password, nodes


class LoadInBackground(RedisCluster):
    """A ``RedisCluster`` whose slot-map load outlives the call that started it.

    Overrides ``initialize``, which redis-py calls before a command whenever the
    map is missing or stale; ``_initialize`` is redis-py's own flag for that."""

    _loading: asyncio.Task[RedisCluster] | None = None

    async def initialize(
        self,
        additional_startup_nodes_info: Any = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        if not self._initialize:  # loaded: no task per command
            return self
        loading = self._loading
        if loading is None or loading.done():
            loading = asyncio.ensure_future(
                super().initialize(additional_startup_nodes_info, last_failed_node_name)
            )
            # Every waiter may have gone by the time it fails; the next call
            # starts another load and sees its own error.
            loading.add_done_callback(lambda task: task.cancelled() or task.exception())
            self._loading = loading
        return await asyncio.shield(loading)

    async def aclose(self) -> None:
        # redis-py closes nothing while a load is under way (it checks the same
        # flag), so a load left running would open connections nobody closes.
        loading, self._loading = self._loading, None
        if loading is not None and not loading.done():
            loading.cancel()
            await asyncio.wait([loading])
        await super().aclose()


def cluster_from_url(url: str, timeout_seconds: float) -> RedisCluster:
    tls, username, password, nodes = _split_url(url)
    return LoadInBackground(
        startup_nodes=nodes,
        username=username,
        password=password,
        ssl=tls,
        require_full_coverage=False,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=30,
        # One retry: the cluster client reloads the slot map before it (after a
        # connection error, a failover or CLUSTERDOWN), which is what lets a
        # command follow a promoted replica. The client retries timeouts too and
        # cannot be told otherwise; the caller's deadline bounds the total.
        retry=Retry(NoBackoff(), 1),
    )


class NodeCooldown:
    """Cluster nodes that just failed: their keys fail fast for ``seconds``, then
    one caller at a time probes the node until a call succeeds."""

    def __init__(self, client: RedisCluster, seconds: float = 1.0) -> None:
        self._client = client
        self._seconds = seconds
        self._until: dict[str, float] = {}

    def check(self, keys: Iterable[str]) -> None:
        """Raise ``CacheUnavailable`` if a node holding one of ``keys`` is cooling down."""
        if not self._until:
            return
        now = time.monotonic()
        for node in self._nodes(keys):
            until = self._until.get(node)
            if until is None:
                continue
            if now < until:
                raise CacheUnavailable(f"redis cluster node {node} is down (cooling down)")
            # Expired: this caller probes; the others keep failing fast meanwhile.
            self._until[node] = now + self._seconds

    def failed(self, keys: Iterable[str]) -> None:
        until = time.monotonic() + self._seconds
        for node in self._nodes(keys):
            self._until[node] = until

    def succeeded(self, keys: Iterable[str]) -> None:
        if self._until:
            for node in self._nodes(keys):
                self._until.pop(node, None)

    def _nodes(self, keys: Iterable[str]) -> set[str]:
        """Names of the masters for ``keys`` in the client's current slot map;
        none before the client has loaded one (the call itself loads it)."""
        try:
            return {node.name for key in keys if (node := self._client.get_node_from_key(key))}
        except (RedisClusterException, RedisError):
            return set()
