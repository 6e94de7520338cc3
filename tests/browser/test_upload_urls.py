"""One-time upload URLs in real Chromium, from other origins and from the page.

`pinhole up` runs with tokens configured (no anonymous uploads) and one allowed
CORS origin. Two more loopback HTTP servers (other ports: other origins) serve a
tiny page that uploads with fetch to an upload URL the test obtained with the
bearer token: from the allowed origin the browser lets the page read the
answer; from the other the browser blocks the request (the preflight is
refused), and the URL stays unused. The upload page itself uploads with a URL
given in its fragment.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from tests.support.browser import UPLOAD_URLS_TOKEN, UploadUrlsUp
from tests.support.photos import photo_path

READY_TIMEOUT_MS = 90_000
_SIZES = itertools.count(40)


def small_jpeg() -> bytes:
    """A JPEG no other upload of this `pinhole up` has sent (a fresh image id),
    so every upload here is new, never a duplicate."""
    data: bytes = pyvips.Image.black(next(_SIZES), 30).write_to_buffer(".jpg")
    return data


AUTH = {"Authorization": f"Bearer {UPLOAD_URLS_TOKEN}"}

# The other origin's whole page: two ways a browser app sends a file.
UPLOADER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another app</title></head>
<body><h1>Another app</h1>
<script>
function blobOf(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}
// A raw body: not a "simple" request, so the browser asks first (preflight).
async function uploadRaw(url, b64, type) {
  try {
    const resp = await fetch(url, {
      method: "POST", headers: { "Content-Type": type }, body: blobOf(b64, type),
    });
    return { ok: true, status: resp.status, body: await resp.json() };
  } catch (err) {
    return { ok: false, error: String(err) };
  }
}
// A form: a "simple" request, sent with no preflight.
function uploadForm(url, b64, type) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", blobOf(b64, type), "photo.jpg");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.addEventListener("load", () =>
      resolve({ ok: true, status: xhr.status, body: JSON.parse(xhr.responseText) }));
    xhr.addEventListener("error", () => resolve({ ok: false, error: "blocked" }));
    xhr.send(form);
  });
}
</script></body></html>
"""


async def _origin_server(port: int) -> TestServer:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=UPLOADER_HTML, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/uploader.html", page)])
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return server


@pytest.fixture
async def origins(up_with_upload_urls: UploadUrlsUp) -> AsyncIterator[UploadUrlsUp]:
    servers = [
        await _origin_server(up_with_upload_urls.allowed_port),
        await _origin_server(up_with_upload_urls.other_port),
    ]
    try:
        yield up_with_upload_urls
    finally:
        for server in servers:
            await server.close()


async def new_upload_url(up: UploadUrlsUp, **body: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{up.process.url}/v1/upload-urls",
            headers=AUTH,
            json={"owner": "browser-user", **body},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        made: dict[str, Any] = await resp.json()
        return made


async def open_uploader(browser: Browser, origin: str) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{origin}/uploader.html")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Another app")
    return page


async def upload_from(page: Page, how: str, url: str, data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        f"([url, b64]) => {how}(url, b64, 'image/jpeg')",
        [url, base64.b64encode(data).decode()],
    )
    return result


@pytest.mark.parametrize("how", ["uploadRaw", "uploadForm"])
async def test_a_page_of_an_allowed_origin_uploads_once_with_the_url(
    browser: Browser, origins: UploadUrlsUp, how: str
) -> None:
    made = await new_upload_url(origins, metadata={"via": how})
    assert made["url"].startswith(origins.process.url + "/v1/uploads/")
    page = await open_uploader(browser, origins.allowed_origin)
    try:
        result = await upload_from(page, how, made["url"], small_jpeg())
        assert result["ok"], result
        assert result["status"] == 202, result
        assert result["body"]["upload_id"] == made["upload_id"]
        assert result["body"]["record"]["owner"] == "browser-user"
        assert result["body"]["record"]["metadata"] == {"via": how}
        # Once only; the browser may read the refusal too.
        again = await upload_from(page, how, made["url"], small_jpeg())
        assert again["ok"], again
        assert (again["status"], again["body"]["error"]["code"]) == (409, "upload-url-used")
    finally:
        await page.context.close()


async def test_a_page_of_another_origin_is_blocked_and_uses_nothing(
    browser: Browser, origins: UploadUrlsUp
) -> None:
    made = await new_upload_url(origins)
    other = await open_uploader(browser, origins.other_origin)
    messages: list[str] = []
    other.on("console", lambda message: messages.append(message.text))
    try:
        for how in ("uploadRaw", "uploadForm"):
            result = await upload_from(other, how, made["url"], small_jpeg())
            assert not result["ok"], (how, result)
        assert any("CORS" in text for text in messages), messages
    finally:
        await other.context.close()
    # Neither attempt used the URL up.
    allowed = await open_uploader(browser, origins.allowed_origin)
    try:
        result = await upload_from(allowed, "uploadRaw", made["url"], small_jpeg())
        assert (result["ok"], result.get("status")) == (True, 202), result
    finally:
        await allowed.context.close()


async def test_the_upload_page_uploads_with_a_url_in_its_fragment(
    browser: Browser, origins: UploadUrlsUp, tmp_path: Path
) -> None:
    up = origins.process
    # With tokens configured, the page's anonymous upload is refused.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{up.url}/v1/images", data=small_jpeg(), headers={"Content-Type": "image/jpeg"}
        ) as resp,
    ):
        assert resp.status == 401
    made = await new_upload_url(origins)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(f"{up.url}/#upload_url={made['url']}")
        await expect(page.locator("#upload-url-note")).to_be_visible()
        photo = photo_path("autumn-2560x1600.jpg")
        await page.get_by_label("Choose images").set_input_files(photo)
        item = page.locator(f'.card[data-name="{photo.name}"]')
        await expect(item).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
        await expect(item).to_have_attribute("data-loaded", "true", timeout=READY_TIMEOUT_MS)
        # The URL is used: the next file gets the server's refusal on its card.
        second = tmp_path / "second.jpg"
        second.write_bytes(small_jpeg())
        await page.get_by_label("Choose images").set_input_files(second)
        refused = page.locator('.card[data-name="second.jpg"]')
        await expect(refused).to_have_attribute("data-state", "error", timeout=READY_TIMEOUT_MS)
        await expect(refused).to_have_attribute("data-error-code", "upload-url-used")
    finally:
        await context.close()
