"""Animated inputs: made from the real photographs, and real ones from a package.

``panning`` cuts frames from a real photo, each a little further along it, so
every frame differs (encoders merge identical neighbours) and a resize that
mixed frames up would show. ``package_animation`` returns a real animation
from the test images of Pillow's source distribution on PyPI, fetched once by
``scripts/fetch-animations.sh`` into ``.cache/animations``.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import pyvips

from tests.support.photos import photo_path

ANIMATIONS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "animations"


@dataclass(frozen=True)
class Animated:
    name: str
    data: bytes
    width: int
    height: int  # of one frame
    frames: int
    delays_ms: tuple[int, ...]
    loop: int


def _roll(photo: str, width: int, height: int, frames: int) -> pyvips.Image:
    # Twice the frame size, so the pan moves by whole pixels even over 300 frames.
    source = pyvips.Image.thumbnail(str(photo_path(photo)), width * 2, height=height * 2)
    source = source.thumbnail_image(width * 2, height=height * 2, crop="centre")
    step_x = (source.width - width) / max(1, frames - 1)
    step_y = (source.height - height) / max(1, frames - 1)
    pages = [
        source.crop(round(step_x * i), round(step_y * i), width, height) for i in range(frames)
    ]
    return pyvips.Image.arrayjoin(pages, across=1)


def panning(
    photo: str,
    width: int,
    height: int,
    frames: int,
    *,
    fmt: str = "gif",
    delay_ms: int = 40,
    loop: int = 0,
    alpha: bool = False,
) -> Animated:
    """An animated GIF or WebP panning across a real photo; every frame differs."""
    image = _roll(photo, width, height, frames)
    if alpha:
        # A transparent band down the left of every frame.
        xy = pyvips.Image.xyz(image.width, image.height)
        image = image.bandjoin((xy[0] < width // 4).ifthenelse(0, 255).cast("uchar"))
    delays = [delay_ms + 10 * (i % 3) for i in range(frames)]
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", height)
    image.set_type(pyvips.GValue.array_int_type, "delay", delays)
    image.set_type(pyvips.GValue.gint_type, "loop", loop)
    options = {"effort": 1} if fmt == "gif" else {"Q": 80, "effort": 0}
    data = image.write_to_buffer(f".{fmt}", **options)
    name = f"{photo}-{width}x{height}x{frames}.{fmt}"
    return Animated(name, data, width, height, frames, tuple(delays), loop)


def write_panning_gif(path: Path, photo: str, width: int, height: int, frames: int) -> None:
    """A long GIF straight to a file, frame rows streaming into the encoder."""
    image = _roll(photo, width, height, frames).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", height)
    image.set_type(pyvips.GValue.array_int_type, "delay", [40] * frames)
    image.set_type(pyvips.GValue.gint_type, "loop", 0)
    image.write_to_file(str(path), effort=1)


def package_animation(name: str) -> bytes:
    path = ANIMATIONS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/fetch-animations.sh")
    return path.read_bytes()


def frames_of(data: bytes) -> list[bytes]:
    """Every frame's composed RGBA pixels, as the decoder shows them."""
    image = pyvips.Image.new_from_buffer(data, "", n=-1)
    if not image.hasalpha():
        image = image.bandjoin(255)
    height = int(image.get("page-height")) if image.get_typeof("page-height") else image.height
    return [
        bytes(image.crop(0, i * height, image.width, height).write_to_memory())
        for i in range(image.height // height)
    ]


def distinct_frames(data: bytes) -> int:
    """Frames that differ from the one before: encoders merge identical neighbours."""
    digests = [hashlib.sha256(f).digest() for f in frames_of(data)]
    return 1 + sum(1 for a, b in itertools.pairwise(digests) if a != b)


def gif_with_frame_outside_screen(screen: int = 16, offset: int = 12, size: int = 8) -> bytes:
    """A valid 2-frame GIF whose second frame lies partly outside its logical screen."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", screen, screen) + b"\x80\x00\x00")
    out += b"\x00\x00\x00\xff\xff\xff"  # two-colour global table
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop for ever
    for left in (0, offset):
        out += b"!\xf9\x04\x00\x0a\x00\x00\x00"  # 100 ms
        out += b"," + struct.pack("<HHHHB", left, left, size, size, 0)
        out += _lzw_one_colour(size * size)
    return bytes(out + b";")


def _lzw_one_colour(pixels: int) -> bytes:
    """LZW data (min code size 2) for ``pixels`` of colour 0, written as clear +
    literal codes so no code table grows past 3 bits."""
    codes = []
    for i in range(pixels):
        if i % 2 == 0:
            codes.append(4)  # clear: keeps the code width at 3 bits
        codes.append(0)
    codes.append(5)  # end of information
    bits = 0
    nbits = 0
    data = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += 3
        while nbits >= 8:
            data.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        data.append(bits & 0xFF)
    blocks = bytearray(b"\x02")
    for i in range(0, len(data), 255):
        chunk = data[i : i + 255]
        blocks += bytes([len(chunk)]) + chunk
    return bytes(blocks + b"\x00")


def gif_big_screen(width: int, height: int, frames: int) -> bytes:
    """A tiny file declaring ``frames`` frames of 1x1 pixel on a ``width`` x
    ``height`` logical screen: a decoder composes each onto the whole screen."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00")
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for _ in range(frames):
        out += b"!\xf9\x04\x00\x0a\x00\x00\x00"
        out += b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + _lzw_one_colour(1)
    return bytes(out + b";")


def webp_frame_moved(data: bytes, frame: int, x: int, y: int) -> bytes:
    """An animated WebP with one ``ANMF`` frame's offset changed (to ``x``, ``y``,
    even numbers), the rest as encoded."""
    out = bytearray(data)
    pos, seen = 12, 0
    while pos + 8 <= len(out):
        kind = bytes(out[pos : pos + 4])
        (length,) = struct.unpack("<I", out[pos + 4 : pos + 8])
        if kind == b"ANMF":
            seen += 1
            if seen == frame:
                out[pos + 8 : pos + 11] = (x // 2).to_bytes(3, "little")
                out[pos + 11 : pos + 14] = (y // 2).to_bytes(3, "little")
                return bytes(out)
        pos += 8 + length + (length & 1)
    raise ValueError(f"no frame {frame}")
