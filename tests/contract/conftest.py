"""Fixtures the contract suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import RedisClusterNodes, start_redis_cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A real three-master Redis Cluster, one per test module: the hot-cache
    suite kills masters, so no other module may share its cluster."""
    cluster = start_redis_cluster(masters=3)
    yield cluster
    cluster.stop()
