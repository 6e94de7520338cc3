"""Walk an upload's container structure before any decoder sees it.

A header-only open by libvips is cheap for pixels but not for everything in
front of them: libjpeg keeps every APP segment it meets (EXIF, ICC, XMP),
libspng every text and profile chunk before the image data, and libvips
counts an animated GIF's frames by scanning the whole file. This walk reads
only segment, chunk and block headers and seeks over payloads, so hostile
metadata and frame counts are refused for the price of a few small reads.

It is also bounded in work: a file made of millions of tiny blocks is
refused once it needs more steps than any real image does.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.sniff import InputFormat
from pinhole.errors import ImageTooLarge, MetadataTooLarge, UndecodableImage
from pinhole.settings import Limits

_BUFFER = 64 * 1024
# Segments, chunks and GIF sub-blocks visited. A 50 MB GIF holds ~200k
# full-size sub-blocks; only a hostile file needs more.
MAX_STEPS = 1_000_000

_JPEG_METADATA = frozenset(range(0xE0, 0xF0)) | {0xFE}  # APP0-APP15, COM
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RST0-7, TEM
_PNG_METADATA = frozenset({b"iCCP", b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"sPLT"})
_WEBP_METADATA = frozenset({b"ICCP", b"EXIF", b"XMP "})


@dataclass(frozen=True, slots=True)
class Structure:
    """What the walk learned. ``frames`` is ``None`` where it is not counted."""

    metadata_bytes: int
    frames: int | None


class _Malformed(Exception):
    """The structure is cut short or does not follow the format."""


class _Walker:
    """Exact reads and forward seeks over a file, with the step and metadata budget."""

    def __init__(self, f: BinaryIO, size: int, limits: Limits) -> None:
        self._f = f
        self.size = size
        self._limits = limits
        self.steps = 0
        self.metadata_bytes = 0

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise _Malformed("the file ends inside a header")
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self._f.tell() + n > self.size:
            raise _Malformed("a block runs past the end of the file")
        self._f.seek(n, io.SEEK_CUR)

    def tell(self) -> int:
        return self._f.tell()

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Malformed("the file is split into more blocks than any real image")

    @property
    def limits(self) -> Limits:
        return self._limits

    def metadata_budget(self) -> int:
        return self._limits.max_metadata_bytes - self.metadata_bytes

    def metadata(self, n: int) -> None:
        self.metadata_bytes += n
        limit = self._limits.max_metadata_bytes
        if self.metadata_bytes > limit:
            raise MetadataTooLarge(f"The image carries over {limit} bytes of metadata.")


def _jpeg(w: _Walker) -> int | None:
    """Markers from SOI to the first SOS: everything libjpeg reads for a header."""
    w.skip(2)  # SOI
    while True:
        w.step()
        if w.read(1) != b"\xff":
            raise _Malformed("expected a JPEG marker")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes may precede a marker
            marker = w.read(1)[0]
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise _Malformed("the JPEG has no image data")
        (length,) = struct.unpack(">H", w.read(2))
        if length < 2:
            raise _Malformed("a JPEG segment has an impossible length")
        if marker == 0xDA:  # SOS: entropy-coded data follows, the header is over
            return None
        if marker in _JPEG_METADATA:
            w.metadata(length - 2)
        w.skip(length - 2)


def _png(w: _Walker) -> int | None:
    """Chunks up to the first IDAT: everything a header read loads."""
    w.skip(8)  # signature
    first = True
    while True:
        w.step()
        length, kind = struct.unpack(">I4s", w.read(8))
        if length > 0x7FFFFFFF:
            raise _Malformed("a PNG chunk has an impossible length")
        if first and (kind != b"IHDR" or length != 13):
            raise _Malformed("a PNG starts with its IHDR chunk")
        first = False
        if kind == b"IDAT":
            return None
        if kind == b"IEND":
            raise _Malformed("the PNG has no image data")
        if kind in _PNG_METADATA:
            w.metadata(length)
        w.skip(length + 4)  # data and CRC


def _gif_sub_blocks(w: _Walker, *, metadata: bool) -> None:
    while True:
        w.step()
        n = w.read(1)[0]
        if n == 0:
            return
        if metadata:
            w.metadata(n)
        w.skip(n)


def _gif_colour_table(w: _Walker, packed: int) -> None:
    if packed & 0x80:
        w.skip(3 * 2 ** ((packed & 0x07) + 1))


def _animation_budget(frames: int, screen: int, limits: Limits, what: str) -> None:
    """Frames and pixels over all frames: every frame is decoded onto the whole screen."""
    if frames > limits.max_frames:
        raise ImageTooLarge(f"The {what} has over {limits.max_frames} frames, the limit.")
    if frames > 1 and frames * screen > limits.max_animation_pixels:
        raise ImageTooLarge(
            f"The {what} has over {limits.max_animation_pixels} pixels over all its frames, "
            "the limit."
        )


def _gif(w: _Walker, limits: Limits) -> int | None:
    """Every block to the trailer, counting frames; refused as soon as there are too
    many, too many pixels over all of them, or one lies outside the logical screen."""
    w.skip(6)  # signature and version
    screen_width, screen_height = struct.unpack("<HH", w.read(4))
    packed = w.read(3)[0]
    _gif_colour_table(w, packed)
    frames = 0
    while True:
        w.step()
        introducer = w.read(1)
        if introducer == b";":
            if frames == 0:
                raise _Malformed("the GIF has no image data")
            return frames
        if introducer == b",":
            frames += 1
            _animation_budget(frames, screen_width * screen_height, limits, "GIF")
            descriptor = w.read(9)
            left, top, width, height = struct.unpack("<HHHH", descriptor[:8])
            if left + width > screen_width or top + height > screen_height:
                raise _Malformed(
                    f"frame {frames} ({width}x{height} at {left},{top}) lies outside "
                    f"the {screen_width}x{screen_height} logical screen"
                )
            _gif_colour_table(w, descriptor[8])
            w.skip(1)  # LZW minimum code size
            _gif_sub_blocks(w, metadata=False)
        elif introducer == b"!":
            label = w.read(1)[0]
            # Comment and application blocks (XMP, ICC) are metadata; others are tiny.
            _gif_sub_blocks(w, metadata=label in (0xFE, 0xFF))
        else:
            raise _Malformed("an unknown GIF block")


def _u24(data: bytes) -> int:
    return int.from_bytes(data[:3], "little")


def _webp(w: _Walker, limits: Limits) -> int | None:
    """Top-level RIFF chunks: animation frames (each inside the VP8X canvas, their
    count and pixels over all frames bounded) and metadata."""
    w.skip(4)  # RIFF
    (riff_size,) = struct.unpack("<I", w.read(4))
    w.skip(4)  # WEBP
    end = riff_size + 8
    if end > w.size:
        raise _Malformed("the file is shorter than its RIFF header says")
    if w.size > end + 1:  # one byte of padding is tolerated
        raise _Malformed("data follows the end of the image")
    frames = 0
    canvas: tuple[int, int] | None = None
    while w.tell() + 8 <= end:
        w.step()
        kind, length = struct.unpack("<4sI", w.read(8))
        if kind == b"VP8X" and canvas is None and length >= 10:
            header = w.read(10)
            canvas = (_u24(header[4:7]) + 1, _u24(header[7:10]) + 1)
            length -= 10
        elif kind == b"ANMF":
            frames += 1
            if canvas is None:
                raise _Malformed("an animation frame comes before the VP8X canvas")
            _animation_budget(frames, canvas[0] * canvas[1], limits, "WebP")
            if length < 16:
                raise _Malformed("a WebP animation frame is cut short")
            header = w.read(16)
            x, y = 2 * _u24(header[0:3]), 2 * _u24(header[3:6])
            width, height = _u24(header[6:9]) + 1, _u24(header[9:12]) + 1
            if x + width > canvas[0] or y + height > canvas[1]:
                raise _Malformed(
                    f"frame {frames} ({width}x{height} at {x},{y}) lies outside "
                    f"the {canvas[0]}x{canvas[1]} canvas"
                )
            length -= 16
        elif kind in _WEBP_METADATA:
            w.metadata(length)
        if w.tell() + length > end:
            raise _Malformed("a WebP chunk runs past the end of the image")
        w.skip(min(length + (length & 1), end - w.tell()))
    return frames or None


def _box(w: _Walker, end: int) -> tuple[bytes, int, int]:
    """One ISO-BMFF box header at the current position: type, payload start, box end."""
    w.step()
    start = w.tell()
    size, kind = struct.unpack(">I4s", w.read(8))
    if size == 1:
        (size,) = struct.unpack(">Q", w.read(8))
    elif size == 0:  # to the end of the enclosing box (the file, at the top)
        size = end - start
    if size < w.tell() - start or start + size > end:
        raise _Malformed("an ISO-BMFF box runs past its container")
    return kind, w.tell(), start + size


class _Meta:
    """A bounded parser of a HEIF ``meta`` box held in memory: the primary item, the
    item types, the byte lengths of the items (``iloc``), and the properties
    (``ispe`` sizes, ``irot`` turns, ``colr`` ICC profiles) each item has."""

    def __init__(self, data: bytes, walker: _Walker) -> None:
        self.data = data
        self.w = walker
        self.primary: int | None = None
        self.types: dict[int, bytes] = {}
        self.lengths: dict[int, int] = {}
        self.properties: list[tuple[bytes, bytes]] = []
        self.associations: dict[int, list[int]] = {}

    def _int(self, at: int, n: int) -> int:
        if at + n > len(self.data):
            raise _Malformed("a HEIF box is cut short")
        return int.from_bytes(self.data[at : at + n], "big")

    def boxes(self, start: int, end: int) -> list[tuple[bytes, int, int]]:
        found = []
        while start + 8 <= end:
            self.w.step()
            size, kind = self._int(start, 4), self.data[start + 4 : start + 8]
            header = 8
            if size == 1:
                size, header = self._int(start + 8, 8), 16
            elif size == 0:
                size = end - start
            if size < header or start + size > end:
                raise _Malformed("a HEIF box runs past its container")
            found.append((kind, start + header, start + size))
            start += size
        return found

    def parse(self) -> None:
        for kind, start, end in self.boxes(4, len(self.data)):  # after version and flags
            if kind == b"pitm":
                self.primary = self._int(start + 4, 2 if self._int(start, 1) == 0 else 4)
            elif kind == b"iinf":
                self._iinf(start, end)
            elif kind == b"iloc":
                self._iloc(start)
            elif kind == b"iprp":
                for child, child_start, child_end in self.boxes(start, end):
                    if child == b"ipco":
                        self.properties = [
                            (k, self.data[s:e]) for k, s, e in self.boxes(child_start, child_end)
                        ]
                    elif child == b"ipma":
                        self._ipma(child_start)

    def _iinf(self, start: int, end: int) -> None:
        first = start + (6 if self._int(start, 1) == 0 else 8)
        for kind, entry, _ in self.boxes(first, end):
            if kind != b"infe":
                continue
            version = self._int(entry, 1)
            if version < 2:
                continue
            width = 2 if version == 2 else 4
            item = self._int(entry + 4, width)
            at = entry + 4 + width + 2  # item_protection_index
            self._int(at, 4)
            self.types[item] = self.data[at : at + 4]

    def _iloc(self, start: int) -> None:
        version = self._int(start, 1)
        sizes, more = self._int(start + 4, 1), self._int(start + 5, 1)
        offset_size, length_size = sizes >> 4, sizes & 15
        base_size, index_size = more >> 4, (more & 15) if version in (1, 2) else 0
        id_width = 2 if version < 2 else 4
        at = start + 6
        count = self._int(at, id_width)
        at += id_width
        for _ in range(count):
            self.w.step()
            item = self._int(at, id_width)
            at += id_width + (2 if version in (1, 2) else 0) + 2 + base_size
            extents = self._int(at, 2)
            at += 2
            total = 0
            for _ in range(extents):
                self.w.step()
                at += index_size + offset_size
                total += self._int(at, length_size) if length_size else 0
                at += length_size
            self.lengths[item] = total

    def _ipma(self, start: int) -> None:
        version, flags = self._int(start, 1), self._int(start + 1, 3)
        count = self._int(start + 4, 4)
        at = start + 8
        for _ in range(count):
            self.w.step()
            width = 2 if version < 1 else 4
            item = self._int(at, width)
            n = self._int(at + width, 1)
            at += width + 1
            wide = bool(flags & 1)
            indices = []
            for _ in range(n):
                value = self._int(at, 2 if wide else 1)
                indices.append(value & (0x7FFF if wide else 0x7F))
                at += 2 if wide else 1
            self.associations[item] = indices

    def property_of(self, item: int, kind: bytes) -> bytes | None:
        for index in self.associations.get(item, []):
            if 1 <= index <= len(self.properties) and self.properties[index - 1][0] == kind:
                return self.properties[index - 1][1]
        return None


# Item types whose bytes libheif (and libvips' header read) load as metadata.
_HEIF_METADATA_ITEMS = frozenset({b"Exif", b"mime", b"iptc"})


def _heif(w: _Walker) -> int | None:
    """ISO-BMFF boxes to the ``meta`` box, whose item table is parsed in memory
    (bounded by the metadata budget): the primary image's size from its ``ispe``
    (turned by ``irot``), and the bytes of ICC profiles and Exif/XMP items."""
    kind, _, end = _box(w, w.size)
    if kind != b"ftyp":
        raise _Malformed("a HEIF file starts with its ftyp box")
    w.skip(end - w.tell())
    while w.tell() + 8 <= w.size:
        kind, start, end = _box(w, w.size)
        if kind == b"meta":
            if end - start > w.metadata_budget():
                w.metadata(end - start)
            _heif_meta(w, _Meta(w.read(end - start), w))
            return None
        w.skip(end - w.tell())
    raise _Malformed("the HEIF file has no meta box")


def _heif_meta(w: _Walker, meta: _Meta) -> None:
    meta.parse()
    if meta.primary is None or meta.primary not in meta.types:
        raise _Malformed("the HEIF file names no primary image")
    for item, kind in meta.types.items():
        if kind in _HEIF_METADATA_ITEMS:
            w.metadata(meta.lengths.get(item, 0))
    for kind, body in meta.properties:
        if kind == b"colr" and body[:4] in (b"prof", b"rICC"):
            w.metadata(len(body) - 4)
    ispe = meta.property_of(meta.primary, b"ispe")
    if ispe is None or len(ispe) < 12:
        raise _Malformed("the primary HEIF image has no size (ispe)")
    width, height = struct.unpack(">II", ispe[4:12])
    irot = meta.property_of(meta.primary, b"irot")
    if irot and irot[0] & 1:
        width, height = height, width
    check_dimensions(width, height, w.limits)
    return None


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """The size limits on an upright image, from its header alone."""
    if width > limits.max_width or height > limits.max_height:
        raise ImageTooLarge(
            f"The image is {width}x{height}; the limit is {limits.max_width}x{limits.max_height}."
        )
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image has {width * height} pixels; the limit is {limits.max_pixels}."
        )


def scan_structure(path: Path, fmt: InputFormat, size: int, limits: Limits) -> Structure:
    """Blocking: call it from a worker thread.

    Raises ``MetadataTooLarge``, ``ImageTooLarge`` (frames, GIF/WebP pixels over
    all frames; for AVIF and HEIF the primary image's size too) or
    ``UndecodableImage`` (cut short, malformed, a GIF/WebP frame outside the
    screen, or pathologically fragmented).
    """
    with open(path, "rb", buffering=_BUFFER) as f:
        w = _Walker(f, size, limits)
        try:
            if fmt in (InputFormat.AVIF, InputFormat.HEIF):
                frames = _heif(w)
            elif fmt is InputFormat.JPEG:
                frames = _jpeg(w)
            elif fmt is InputFormat.PNG:
                frames = _png(w)
            elif fmt is InputFormat.GIF:
                frames = _gif(w, limits)
            else:
                frames = _webp(w, limits)
        except _Malformed as exc:
            raise UndecodableImage(f"The {fmt.value} file is malformed: {exc}.") from None
    return Structure(metadata_bytes=w.metadata_bytes, frames=frames)
