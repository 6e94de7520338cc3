"""Decide the type from magic bytes, never from the filename or Content-Type."""

from __future__ import annotations

import enum

SNIFF_BYTES = 32


class InputFormat(enum.StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    AVIF = "avif"
    HEIF = "heif"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"


# libvips loader names that may legitimately open each sniffed format.
LOADERS: dict[InputFormat, frozenset[str]] = {
    InputFormat.JPEG: frozenset({"jpegload"}),
    InputFormat.PNG: frozenset({"pngload"}),
    InputFormat.GIF: frozenset({"gifload"}),
    InputFormat.WEBP: frozenset({"webpload"}),
    InputFormat.AVIF: frozenset({"heifload"}),
    InputFormat.HEIF: frozenset({"heifload"}),
}

_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def sniff(head: bytes) -> InputFormat | None:
    if head.startswith(b"\xff\xd8\xff"):
        return InputFormat.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return InputFormat.PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return InputFormat.GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return InputFormat.WEBP
    if head[4:8] == b"ftyp":
        return _iso_bmff(head)
    return None


_GENERIC_BRANDS = {b"mif1", b"msf1"}


def _iso_bmff(head: bytes) -> InputFormat | None:
    """The major brand decides, but a generic one (``mif1``, ``msf1``: any HEIF
    codec) defers to the compatible brands within the sniffed bytes, so an AVIF
    written with major brand ``mif1`` is AVIF, not HEIF."""
    major = head[8:12]
    if major in _AVIF_BRANDS:
        return InputFormat.AVIF
    end = min(int.from_bytes(head[0:4], "big"), len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _GENERIC_BRANDS and compatible & _AVIF_BRANDS:
        return InputFormat.AVIF
    if major in _HEIF_BRANDS:
        return InputFormat.HEIF
    return None


def looks_complete(fmt: InputFormat, tail: bytes, size: int, head: bytes) -> bool:
    """A cheap structural check that the file was not cut short, before any decode.

    Header-only probing cannot see truncation, and a truncated upload must be
    refused at the door rather than fail later in the transcoder.
    """
    if fmt is InputFormat.JPEG:
        # EOI marker, allowing the padding some encoders add. Data appended after
        # EOI (polyglots) is refused too: every served byte is re-encoded anyway.
        return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    if fmt is InputFormat.PNG:
        return tail.endswith(b"IEND\xaeB`\x82")
    if fmt is InputFormat.GIF:
        return tail.rstrip(b"\x00").endswith(b";")
    if fmt is InputFormat.WEBP:
        declared = int.from_bytes(head[4:8], "little") + 8
        return size >= declared
    return True  # ISO-BMFF boxes are checked by the decoder's header parse
