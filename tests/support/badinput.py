"""Hostile and broken uploads, made on the fly (no files checked in)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

import pyvips


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, complete PNG whose header claims enormous dimensions."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def over_pixel_limit_png() -> bytes:
    """A real, decodable 56-megapixel image (the default limit is 50 MP)."""
    data: bytes = pyvips.Image.black(8000, 7000).write_to_buffer(".png", compression=9)
    return data


def small_jpeg() -> bytes:
    data: bytes = pyvips.Image.black(64, 48).write_to_buffer(".jpg")
    return data


def small_png() -> bytes:
    data: bytes = (pyvips.Image.black(64, 48) + 90).cast("uchar").write_to_buffer(".png")
    return data


def small_webp() -> bytes:
    data: bytes = (pyvips.Image.black(64, 48) + 90).cast("uchar").write_to_buffer(".webp")
    return data


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_zlib_bomb(side: int = 12_000) -> bytes:
    """A real deflate bomb: ~150 KB that inflates to side² bytes of grey (144 MB)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    squeeze = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one row
    idat = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_with_huge_icc(total: int = 5 * 1024 * 1024) -> bytes:
    """A valid small PNG whose iCCP chunk (stored, not deflated) is ``total`` bytes."""
    png = small_png()
    profile = zlib.compress(b"\x00" * 16, 0)
    payload = b"icc\x00\x00" + profile + b"\x00" * (total - len(profile))
    return png[:33] + _png_chunk(b"iCCP", payload) + png[33:]  # after signature + IHDR


def _with_segments(jpeg: bytes, marker: int, bodies: list[bytes]) -> bytes:
    segments = b"".join(
        bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body for body in bodies
    )
    return jpeg[:2] + segments + jpeg[2:]


def jpeg_with_huge_icc(total: int = 5 * 1024 * 1024) -> bytes:
    """A small JPEG carrying an ICC profile split over APP2 segments, as libjpeg expects."""
    chunk = 65_000
    count = -(-total // chunk)
    bodies = [b"ICC_PROFILE\x00" + bytes([i + 1, count]) + b"\x00" * chunk for i in range(count)]
    return _with_segments(small_jpeg(), 0xE2, bodies)


def jpeg_with_huge_exif(total: int = 5 * 1024 * 1024) -> bytes:
    """APP1 segments, every one an EXIF block, adding up to ``total`` bytes."""
    chunk = 65_000
    bodies = [b"Exif\x00\x00" + b"\x00" * chunk for _ in range(-(-total // chunk))]
    return _with_segments(small_jpeg(), 0xE1, bodies)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small, complete JPEG whose frame header claims other dimensions."""
    data = bytearray(small_jpeg())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


_GIF_HEAD = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\xff\xff\xff\x00\x00\x00"
# Graphic control extension, then one 1x1 frame with its LZW data.
_GIF_FRAME = (
    b"!\xf9\x04\x04\x01\x00\x00\x00"
    + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00"
    + b"\x02\x02D\x01\x00"
)


def gif_with_frames(frames: int) -> bytes:
    """An animated 1x1 GIF: ~20 bytes a frame, so thousands of frames stay tiny."""
    return _GIF_HEAD + b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" + _GIF_FRAME * frames + b";"


def gif_declaring(width: int, height: int) -> bytes:
    """A one-frame GIF whose screen and frame claim huge dimensions, with one pixel of data."""
    size = struct.pack("<HH", width, height)
    frame = b",\x00\x00\x00\x00" + size + b"\x00\x02\x02D\x01\x00"
    return b"GIF89a" + size + _GIF_HEAD[10:] + frame + b";"


def jpeg_zip_polyglot() -> bytes:
    """A JPEG with a ZIP archive appended: opens as either."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.txt", "not a picture")
    return small_jpeg() + archive.getvalue()


def jpeg_html_polyglot() -> bytes:
    """A JPEG with an HTML page after it, for a browser that sniffs."""
    return small_jpeg() + b"<html><body><script>alert(document.cookie)</script></body></html>"


def webp_with_trailer() -> bytes:
    return small_webp() + b"<html><script>alert(1)</script></html>"


TEXT_AS_JPEG = b"Dear diary, this is not a picture at all.\n" * 20
HTML_AS_IMAGE = b"<!doctype html><html><script>alert(1)</script></html>"
SVG_WITH_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
    b'<rect width="10" height="10"/></svg>'
)


@dataclass(frozen=True)
class Hostile:
    """One hostile upload and the answer it must get."""

    name: str
    data: bytes
    content_type: str
    status: int
    code: str


def hostile_uploads() -> list[Hostile]:
    """Every hostile raw-body upload, with its expected status and error code."""
    jpeg, png, webp = small_jpeg(), small_png(), small_webp()
    return [
        Hostile("zero bytes", b"", "image/jpeg", 400, "empty-body"),
        Hostile("text labelled JPEG", TEXT_AS_JPEG, "image/jpeg", 415, "unsupported-media-type"),
        Hostile("HTML labelled PNG", HTML_AS_IMAGE, "image/png", 415, "unsupported-media-type"),
        Hostile("SVG with script", SVG_WITH_SCRIPT, "image/svg+xml", 415, "unsupported-media-type"),
        Hostile("SVG labelled PNG", SVG_WITH_SCRIPT, "image/png", 415, "unsupported-media-type"),
        Hostile("truncated JPEG", truncated(jpeg), "image/jpeg", 422, "undecodable-image"),
        Hostile("truncated PNG", truncated(png), "image/png", 422, "undecodable-image"),
        Hostile("truncated WebP", truncated(webp), "image/webp", 422, "undecodable-image"),
        Hostile("JPEG magic only", b"\xff\xd8\xff", "image/jpeg", 422, "undecodable-image"),
        Hostile("PNG zlib bomb", png_zlib_bomb(), "image/png", 422, "image-too-large"),
        Hostile(
            "PNG declaring 100000x100000",
            png_declaring(100_000, 100_000),
            "image/png",
            422,
            "image-too-large",
        ),
        Hostile(
            "JPEG declaring 60000x60000",
            jpeg_declaring(60_000, 60_000),
            "image/jpeg",
            422,
            "image-too-large",
        ),
        Hostile(
            "GIF declaring 65535x65535",
            gif_declaring(65_535, 65_535),
            "image/gif",
            422,
            "image-too-large",
        ),
        Hostile("GIF with 5000 frames", gif_with_frames(5000), "image/gif", 422, "image-too-large"),
        Hostile("JPEG+ZIP polyglot", jpeg_zip_polyglot(), "image/jpeg", 422, "undecodable-image"),
        Hostile("JPEG+HTML polyglot", jpeg_html_polyglot(), "image/jpeg", 422, "undecodable-image"),
        Hostile("WebP+HTML polyglot", webp_with_trailer(), "image/webp", 422, "undecodable-image"),
        Hostile(
            "JPEG with 5 MB ICC", jpeg_with_huge_icc(), "image/jpeg", 422, "metadata-too-large"
        ),
        Hostile(
            "JPEG with 5 MB EXIF", jpeg_with_huge_exif(), "image/jpeg", 422, "metadata-too-large"
        ),
        Hostile("PNG with 5 MB ICC", png_with_huge_icc(), "image/png", 422, "metadata-too-large"),
        Hostile(
            "over the pixel limit", over_pixel_limit_png(), "image/png", 422, "image-too-large"
        ),
        Hostile("image sent as text/plain", jpeg, "text/plain", 415, "unsupported-media-type"),
    ]


async def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client fixing them up); the status and the body back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return status, body


def error_code(body: bytes) -> str:
    """The stable code of a JSON error body; fails loudly on anything else."""
    assert b"Traceback" not in body, body
    code: str = json.loads(body)["error"]["code"]
    return code
