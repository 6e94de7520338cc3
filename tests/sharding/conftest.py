"""A second S3 server, so shards can live on two endpoints, not only two buckets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import MotoS3, start_moto


@pytest.fixture(scope="package")
def moto_b() -> Iterator[MotoS3]:
    server = start_moto()
    yield server
    server.stop()
