"""An animated upload on the upload page, in real Chromium: the page shows it as
animated WebP (the poster behind prefers-reduced-motion), and Chromium's own
decoder finds every frame in the animated variants, and different pictures in
the first and the last (ImageDecoder, the browser's WebCodecs image decoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pyvips
from playwright.async_api import Browser, expect

from tests.support.animations import panning
from tests.support.processes import PinholeProcess

READY_TIMEOUT_MS = 120_000
PHOTO = "autumn-2560x1600.jpg"

# Decodes the bytes at ``url`` with ImageDecoder: the frame count Chromium sees,
# and whether its first and last frames, drawn to a canvas, differ.
DECODE_FRAMES = """async ([url, type]) => {
    const response = await fetch(url);
    const decoder = new ImageDecoder({ data: response.body, type });
    await decoder.tracks.ready;
    await decoder.completed;
    const track = decoder.tracks.selectedTrack;
    const pixels = async (index) => {
        const { image } = await decoder.decode({ frameIndex: index });
        const canvas = new OffscreenCanvas(image.displayWidth, image.displayHeight);
        const ctx = canvas.getContext("2d");
        ctx.drawImage(image, 0, 0);
        image.close();
        return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    };
    const first = await pixels(0);
    const last = await pixels(track.frameCount - 1);
    let difference = 0;
    const mean = (data) => data.reduce((sum, v, i) => (i % 4 === 3 ? sum : sum + v), 0);
    for (let i = 0; i < first.length; i++) {
        if (i % 4 !== 3) difference += Math.abs(first[i] - last[i]);
    }
    const samples = (first.length / 4) * 3;
    return {
        type: decoder.type,
        animated: track.animated,
        frameCount: track.frameCount,
        repetitionCount: track.repetitionCount,
        meanDifference: difference / samples,
        firstMean: mean(first) / samples,
        lastMean: mean(last) / samples,
    };
}"""


async def test_the_page_plays_an_animated_upload_and_chromium_decodes_its_frames(
    browser: Browser, up: PinholeProcess, tmp_path: Path
) -> None:
    made = panning(PHOTO, 360, 240, 12, loop=0)
    path = tmp_path / "panning.gif"
    path.write_bytes(made.data)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{up.url}/")
        await page.get_by_label("Choose images").set_input_files(path)
        item = page.locator('.card[data-name="panning.gif"]')
        await expect(item).to_have_attribute("data-state", "ready", timeout=READY_TIMEOUT_MS)
        await expect(item).to_have_attribute("data-loaded", "true", timeout=READY_TIMEOUT_MS)
        facts: dict[str, Any] = await item.locator("picture img").evaluate(
            """img => ({
                currentSrc: img.currentSrc,
                naturalWidth: img.naturalWidth,
                src: img.src,
                sources: [...img.parentElement.querySelectorAll("source")].map(s => ({
                    type: s.type, media: s.media, srcset: s.srcset,
                })),
            })"""
        )
        # Animated WebP first (never the still AVIF poster), GIF next; the
        # still poster only for reduced motion.
        assert [(s["type"], s["media"]) for s in facts["sources"]] == [
            ("image/png", "(prefers-reduced-motion: reduce)"),
            ("image/webp", ""),
            ("image/gif", ""),
        ]
        assert facts["currentSrc"].endswith(".webp"), facts
        assert facts["naturalWidth"] > 0

        for fmt in ("webp", "gif"):
            decoded = await page.evaluate(
                DECODE_FRAMES, [facts["currentSrc"][:-4] + fmt, f"image/{fmt}"]
            )
            assert decoded["animated"] is True, (fmt, decoded)
            assert decoded["frameCount"] == made.frames, (fmt, decoded)
            assert decoded["repetitionCount"] == float("inf"), (fmt, decoded)
            # The pan moves the picture: the last frame is another picture than the first,
            # and each is the frame libvips decodes from the same bytes.
            assert decoded["meanDifference"] > 10, (fmt, decoded)
            async with aiohttp.ClientSession() as session:
                variant = facts["currentSrc"][:-4] + fmt
                async with session.get(variant) as resp:
                    frames = pyvips.Image.new_from_buffer(await resp.read(), "", n=-1)
            height = frames.get("page-height")
            for index, key in ((0, "firstMean"), (made.frames - 1, "lastMean")):
                frame = frames.crop(0, index * height, frames.width, height)[0:3]
                assert abs(frame.avg() - decoded[key]) < 2, (fmt, index, decoded)

        # With reduced motion asked for, the page shows the still poster.
        await page.emulate_media(reduced_motion="reduce")
        await page.reload()
        await page.get_by_label("Choose images").set_input_files(path)
        item = page.locator('.card[data-name="panning.gif"]')
        await expect(item).to_have_attribute("data-loaded", "true", timeout=READY_TIMEOUT_MS)
        src = await item.locator("picture img").evaluate("img => img.currentSrc")
        assert src.endswith(".png"), src
        assert not errors, errors
    finally:
        await context.close()
