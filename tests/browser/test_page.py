"""The upload page of `pinhole up`, driven in real Chromium: pick, drop, watch, copy, view.

Each test uses its own browser context (fresh cookies, clipboard grants and
viewport) on one shared `pinhole up`. Waits are bounded by generous timeouts;
nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pyvips
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Response,
    Route,
    expect,
)

from tests.support.badinput import small_jpeg
from tests.support.browser import UPLOAD_LIMIT_BYTES
from tests.support.photos import photo_path, transparent_png
from tests.support.processes import PinholeProcess

READY_TIMEOUT_MS = 90_000
PHOTO = "autumn-2560x1600.jpg"
TOO_BIG = "flow-5120x2880.jpg"
# Edge variant URLs: /<preset>/ab/cd/ef/<id>[.ext]
VARIANT_URL = re.compile(r"/(?:\d+x|originals)/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}")


@dataclass
class Recorder:
    """What the page did: every response's headers by URL, and uncaught JS errors."""

    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    page_errors: list[str] = field(default_factory=list)

    def on_response(self, response: Response) -> None:
        self.headers[response.url] = response.headers


async def open_page(
    browser: Browser, up: PinholeProcess, width: int, height: int = 900
) -> tuple[BrowserContext, Page, Recorder]:
    context = await browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=up.url)
    page = await context.new_page()
    recorder = Recorder()
    page.on("response", recorder.on_response)
    page.on("pageerror", lambda error: recorder.page_errors.append(str(error)))
    await page.goto(f"{up.url}/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Pinhole")
    return context, page, recorder


def card(page: Page, name: str) -> Locator:
    return page.locator(f'.card[data-name="{name}"]')


async def wait_loaded(page: Page, name: str) -> Locator:
    """The card reached ``ready`` and its <img> finished loading."""
    item = card(page, name)
    await expect(item).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
    await expect(item).to_have_attribute("data-loaded", "true", timeout=READY_TIMEOUT_MS)
    return item


async def manifest_of(up: PinholeProcess, image_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{up.url}/v1/images/{image_id}") as resp,
    ):
        assert resp.status == 200
        manifest: dict[str, Any] = await resp.json()
        return manifest


async def server_error(up: PinholeProcess, data: bytes) -> dict[str, str]:
    """The JSON error the server gives these bytes, sent as the page sends them."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{up.url}/v1/images",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp,
    ):
        assert resp.status >= 400
        error: dict[str, str] = (await resp.json())["error"]
        return error


async def img_facts(item: Locator) -> dict[str, Any]:
    facts: dict[str, Any] = await item.locator("picture img").evaluate(
        """img => ({
            complete: img.complete,
            naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight,
            currentSrc: img.currentSrc,
            alt: img.alt,
            sources: [...img.parentElement.querySelectorAll("source")].map(s => ({
                type: s.type, srcset: s.srcset, sizes: s.sizes,
            })),
        })"""
    )
    return facts


def preset_width(url: str) -> int:
    """``474`` for ``http://host/474x/ab/cd/ef/<id>.avif``."""
    preset = urlsplit(url).path.split("/")[1]
    assert preset.endswith("x"), url
    return int(preset[:-1])


async def test_upload_several_files_shows_progress_gallery_and_server_errors(
    browser: Browser, up: PinholeProcess, tmp_path: Path, artifacts: Path
) -> None:
    circle = transparent_png(PHOTO)
    circle_path = tmp_path / "autumn-circle.png"
    circle_path.write_bytes(circle.data)
    too_big = photo_path(TOO_BIG)
    assert too_big.stat().st_size > UPLOAD_LIMIT_BYTES
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("Dear diary, this is not a picture.\n" * 20)

    context, page, recorder = await open_page(browser, up, width=1280)
    try:
        # Several files at once, through the labelled file input.
        await page.get_by_label("Choose images").set_input_files(
            [photo_path(PHOTO), circle_path, too_big, not_an_image]
        )

        # Refused files: the server's own message, per file.
        for path in (too_big, not_an_image):
            expected = await server_error(up, path.read_bytes())
            item = card(page, path.name)
            await expect(item).to_have_attribute("data-state", "error", timeout=READY_TIMEOUT_MS)
            await expect(item).to_have_attribute("data-error-code", expected["code"])
            await expect(item.locator(".status")).to_have_text(expected["message"])
        # The 413 case really is the size limit.
        await expect(card(page, TOO_BIG)).to_have_attribute("data-error-code", "payload-too-large")

        expected_types = {
            PHOTO: ["image/avif", "image/webp", "image/jpeg"],
            circle_path.name: ["image/avif", "image/webp", "image/png"],
        }
        for name, types in expected_types.items():
            item = await wait_loaded(page, name)
            progress = await item.locator("progress").evaluate("p => [p.value, p.max]")
            assert progress == [100, 100], name

            facts = await img_facts(item)
            assert facts["complete"], name
            assert facts["naturalWidth"] > 0, name
            assert facts["alt"], name
            assert [s["type"] for s in facts["sources"]] == types
            manifest = await manifest_of(up, await item.get_attribute("data-id") or "")
            for source, fmt in zip(facts["sources"], ("avif", "webp", types[2][6:]), strict=True):
                assert source["srcset"] == manifest["srcset"][fmt]
                assert source["sizes"]
            # Chromium takes AVIF, and the server sent AVIF bytes for it.
            assert facts["currentSrc"].endswith(".avif"), facts["currentSrc"]
            assert recorder.headers[facts["currentSrc"]]["content-type"] == "image/avif"
            # Shown over its decoded ThumbHash until loaded.
            placeholder = await item.locator(".frame").get_attribute("data-placeholder")
            assert placeholder == "thumbhash", name

        # The negotiated URL, loaded as an image with Chromium's own Accept header.
        image_id = await card(page, PHOTO).get_attribute("data-id") or ""
        manifest = await manifest_of(up, image_id)
        negotiated = manifest["urls"]["474x"]
        size = await page.evaluate(
            """url => new Promise((resolve, reject) => {
                const img = new Image();
                img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
                img.onerror = () => reject(new Error("negotiated URL did not load"));
                img.src = url;
            })""",
            negotiated,
        )
        assert size[0] == 474
        assert recorder.headers[negotiated]["content-type"] == "image/avif"
        assert "accept" in recorder.headers[negotiated]["vary"].lower()

        # The JS port of thumbHashToRGBA: the right shape and the image's colours.
        decoded = await page.evaluate(
            """async b64 => {
                const th = await import("/static/thumbhash.js");
                const {w, h, rgba} = th.thumbHashToRGBA(th.base64ToBytes(b64));
                const mean = [0, 0, 0];
                let lo = 255, hi = 0;
                for (let i = 0; i < rgba.length; i += 4) {
                    for (let c = 0; c < 3; c++) mean[c] += rgba[i + c] / (w * h);
                    lo = Math.min(lo, rgba[i]); hi = Math.max(hi, rgba[i]);
                }
                return {w, h, mean, spread: hi - lo};
            }""",
            manifest["placeholder"]["thumbhash"],
        )
        average = manifest["placeholder"]["average_color"]
        want = [int(average[i : i + 2], 16) for i in (1, 3, 5)]
        assert (decoded["w"], decoded["h"]) == (32, 18)  # 2560x1600, as ThumbHash keeps it
        assert all(abs(m - a) <= 20 for m, a in zip(decoded["mean"], want, strict=True))
        assert decoded["spread"] > 10  # not a flat colour: the AC terms were read

        # Copy the <picture> snippet with navigator.clipboard.
        item = card(page, PHOTO)
        snippet = await item.locator(".snippet").text_content() or ""
        assert snippet.startswith("<picture>")
        assert f'<source type="image/avif" srcset="{manifest["srcset"]["avif"]}"' in snippet
        await item.get_by_role("button", name=f"Copy the <picture> snippet for {PHOTO}").click()
        await expect(item.locator(".copy-snippet")).to_have_text("Copied ✓")
        assert await page.evaluate("navigator.clipboard.readText()") == snippet

        # And the URLs through the textarea fallback, as on a page without the Clipboard API.
        await page.evaluate(
            """() => {
                window.realClipboard = navigator.clipboard;
                Object.defineProperty(navigator, "clipboard", {value: undefined});
            }"""
        )
        await item.get_by_role("button", name=f"Copy the URLs of {PHOTO}").click()
        await expect(item.locator(".copy-urls")).to_have_text("Copied ✓")
        copied = await page.evaluate("window.realClipboard.readText()")
        assert copied == "\n".join(manifest["urls"].values())

        announcer = page.locator("#announcer")
        await expect(announcer).to_have_attribute("aria-live", "polite")
        await expect(announcer).to_have_text(f"URLs for {PHOTO} copied to the clipboard.")
        await card(page, circle_path.name).locator("summary").click()
        await page.screenshot(path=artifacts / "gallery-1280.png", full_page=True)
        assert recorder.page_errors == []
    finally:
        await context.close()


async def test_narrow_viewport_picks_a_small_rung_of_the_ladder(
    browser: Browser, up: PinholeProcess, artifacts: Path
) -> None:
    context, page, recorder = await open_page(browser, up, width=400, height=860)
    # Hold every variant request, to see what the page shows while they load.
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route(VARIANT_URL, hold)
    try:
        # Maybe uploaded by another test already: then a 200 with a ready manifest.
        await page.get_by_label("Choose images").set_input_files(photo_path(PHOTO))
        item = card(page, PHOTO)
        await expect(item).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
        frame = item.locator(".frame")
        await expect(frame).to_have_attribute("data-placeholder", "thumbhash")
        shown = await frame.evaluate(
            """frame => ({
                background: getComputedStyle(frame).backgroundImage,
                imgOpacity: getComputedStyle(frame.querySelector("img")).opacity,
                imgWidth: frame.querySelector("img").naturalWidth,
            })"""
        )
        assert shown["background"].startswith('url("data:image/png;base64,'), shown
        assert shown["imgOpacity"] == "0"
        assert shown["imgWidth"] == 0
        await page.screenshot(path=artifacts / "placeholder-400.png", full_page=True)
        release.set()

        item = await wait_loaded(page, PHOTO)
        facts = await img_facts(item)
        assert facts["naturalWidth"] > 0
        assert preset_width(facts["currentSrc"]) <= 474, facts["currentSrc"]
        assert facts["naturalWidth"] <= 474
        assert recorder.headers[facts["currentSrc"]]["content-type"] == "image/avif"
        await page.screenshot(path=artifacts / "gallery-400.png", full_page=True)
        assert recorder.page_errors == []
    finally:
        await context.close()


async def test_keyboard_picker_and_drop_zone_upload(
    browser: Browser, up: PinholeProcess, tmp_path: Path
) -> None:
    keyed = tmp_path / "keyboard.jpg"
    keyed.write_bytes(small_jpeg())
    dropped_bytes = pyvips.Image.thumbnail(str(photo_path("pastelhills-3200x2000.jpg")), 320)
    dropped_webp: bytes = dropped_bytes.write_to_buffer(".webp")

    context, page, recorder = await open_page(browser, up, width=1024)
    try:
        # Listen for the chooser before the first key: the subscription is set up
        # asynchronously, and a chooser opened before it would be a real dialog.
        async with page.expect_file_chooser() as chooser_info:
            # Tab to the picker: the skip link first, then the (visually hidden) file input.
            for _ in range(5):
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.id") == "file":
                    break
            assert await page.evaluate("document.activeElement.id") == "file"
            outline = await page.locator("label[for=file]").evaluate(
                "label => getComputedStyle(label).outlineStyle"
            )
            assert outline != "none"  # focus is visible on the button the input wears
            await page.keyboard.press("Enter")
        chooser = await chooser_info.value
        assert chooser.is_multiple()
        await chooser.set_files(keyed)

        # Drop a file on the zone, as a drag from the desktop would.
        transfer = await page.evaluate_handle(
            """([name, b64]) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type: "image/webp"}));
                return transfer;
            }""",
            ["dropped.webp", base64.b64encode(dropped_webp).decode()],
        )
        await page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})
        await expect(page.locator("#drop")).to_have_class("drop over")
        await page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
        await expect(page.locator("#drop")).to_have_class("drop")

        for name in ("keyboard.jpg", "dropped.webp"):
            item = await wait_loaded(page, name)
            facts = await img_facts(item)
            assert facts["naturalWidth"] > 0, json.dumps(facts)
        assert recorder.page_errors == []
    finally:
        await context.close()
