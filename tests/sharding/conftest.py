"""The pair of stores the migrate suites run on (fs, or two S3 servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.services import MotoS3
from tests.support.store_pairs import Stores, reopen


@pytest.fixture(params=["fs", "s3"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> AsyncIterator[Stores]:
    if request.param == "fs":
        urls = (f"file://{tmp_path / 'a'}", f"file://{tmp_path / 'b'}")
    else:
        moto_a: MotoS3 = request.getfixturevalue("moto_s3")
        moto_b: MotoS3 = request.getfixturevalue("moto_b")
        urls = (moto_a.url(unique_name + "-a"), moto_b.url(unique_name + "-b"))
    pair = Stores(reopen(urls[0]), reopen(urls[1]), urls)
    yield pair
    await pair.a.close()
    await pair.b.close()
