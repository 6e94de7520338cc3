"""Hostile and broken uploads, made on the fly (no files checked in)."""

from __future__ import annotations

import struct
import zlib

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


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


TEXT_AS_JPEG = b"Dear diary, this is not a picture at all.\n" * 20
HTML_AS_IMAGE = b"<!doctype html><html><script>alert(1)</script></html>"
SVG_WITH_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
    b'<rect width="10" height="10"/></svg>'
)
