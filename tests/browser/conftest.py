"""Real headless Chromium (Debian's, never a downloaded one) against a real `pinhole up`.

Every test here is ``slow``. A missing Chromium is a loud failure, not a skip:
``make test`` installs it (``scripts/apt-install.sh chromium``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    UPLOAD_LIMIT_BYTES,
    UPLOAD_URLS_SIGNING_KEY,
    UPLOAD_URLS_TOKEN,
    UploadUrlsUp,
)
from tests.support.processes import PinholeProcess, start_pinhole
from tests.support.services import free_port

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test` (scripts/apt-install.sh chromium)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # Playwright gives the browser a fresh temporary profile and removes it after.
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PinholeProcess]:
    """`pinhole up` on the embedded defaults, but for a lower upload limit."""
    workdir = tmp_path_factory.mktemp("browser-up")
    env = {"PINHOLE_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT_BYTES)}
    process = start_pinhole("up", env, workdir, cwd=workdir)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def up_with_upload_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadUrlsUp]:
    from ingest.auth import token_digest

    workdir = tmp_path_factory.mktemp("browser-upload-urls")
    port, allowed_port, other_port = free_port(), free_port(), free_port()
    env = {
        "PINHOLE_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT_BYTES),
        # The URLs it hands out name the address the browser uses.
        "PINHOLE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PINHOLE_AUTH__TOKEN_SHA256": json.dumps([token_digest(UPLOAD_URLS_TOKEN)]),
        "PINHOLE_UPLOAD_URLS__SIGNING_KEYS": json.dumps([UPLOAD_URLS_SIGNING_KEY]),
        "PINHOLE_UPLOAD_URLS__CORS_ORIGINS": json.dumps([f"http://127.0.0.1:{allowed_port}"]),
    }
    process = start_pinhole("up", env, workdir, cwd=workdir, port=port)
    try:
        yield UploadUrlsUp(process, allowed_port, other_port)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
