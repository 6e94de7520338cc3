from __future__ import annotations

import pytest
import pyvips

from ingest.sniff import InputFormat, looks_complete, sniff
from tests.support import badinput


def _make(suffix: str, alpha: bool = False) -> bytes:
    image = pyvips.Image.black(40, 30, bands=3) + 80
    if alpha:
        image = image.bandjoin(128)
    data: bytes = image.cast("uchar").write_to_buffer(suffix)
    return data


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [
        (".jpg", InputFormat.JPEG),
        (".png", InputFormat.PNG),
        (".gif", InputFormat.GIF),
        (".webp", InputFormat.WEBP),
        (".avif", InputFormat.AVIF),
    ],
)
def test_sniff_by_magic_and_complete_files_pass(suffix: str, fmt: InputFormat) -> None:
    data = _make(suffix)
    assert sniff(data[:32]) is fmt
    assert looks_complete(fmt, data[-64:], len(data), data[:32])


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [
        (".jpg", InputFormat.JPEG),
        (".png", InputFormat.PNG),
        (".gif", InputFormat.GIF),
        (".webp", InputFormat.WEBP),
    ],
)
def test_truncation_is_seen_without_decoding(suffix: str, fmt: InputFormat) -> None:
    data = badinput.truncated(_make(suffix))
    assert sniff(data[:32]) is fmt
    assert not looks_complete(fmt, data[-64:], len(data), data[:32])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        badinput.TEXT_AS_JPEG,
        badinput.HTML_AS_IMAGE,
        badinput.SVG_WITH_SCRIPT,
        b"BM" + b"\x00" * 60,
        b"II*\x00" + b"\x00" * 60,
        b"\xff\xd8",
    ],
)
def test_anything_else_is_not_an_accepted_format(data: bytes) -> None:
    assert sniff(data[:32]) is None


def test_jpeg_with_appended_archive_is_refused() -> None:
    polyglot = _make(".jpg") + b"PK\x03\x04" + b"\x00" * 100
    assert not looks_complete(InputFormat.JPEG, polyglot[-64:], len(polyglot), polyglot[:32])


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    box = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(box)).to_bytes(4, "big") + b"ftyp" + box


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        # iPhone, Canon and Nokia HEIF files (pillow-heif's test images).
        (_ftyp(b"heic", b"mif1", b"MiHE", b"MiPr", b"miaf"), InputFormat.HEIF),
        (_ftyp(b"heix", b"mif1", b"heix"), InputFormat.HEIF),
        (_ftyp(b"mif1", b"heic", b"mif1"), InputFormat.HEIF),
        (_ftyp(b"msf1", b"hevc"), InputFormat.HEIF),
        # AVIF under a generic major brand: AVIF, for the upload URLs' format lists.
        (_ftyp(b"mif1", b"avif", b"mif1", b"miaf"), InputFormat.AVIF),
        (_ftyp(b"avis", b"msf1"), InputFormat.AVIF),
        # Video and other ISO-BMFF files are not images.
        (_ftyp(b"isom", b"avif"), None),
        (_ftyp(b"qt  "), None),
    ],
)
def test_iso_bmff_brands(head: bytes, fmt: InputFormat | None) -> None:
    assert sniff((head + b"\0" * 32)[:32]) is fmt
