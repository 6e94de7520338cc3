"""The container walk that runs before libvips: frames, metadata, malformed structure."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import pyvips

from ingest import structure
from ingest.sniff import InputFormat
from ingest.structure import Structure, scan_structure
from pinhole.errors import ImageTooLarge, MetadataTooLarge, UndecodableImage
from pinhole.settings import Limits
from tests.support import badinput


def _scan(tmp_path: Path, data: bytes, fmt: InputFormat, **limits: int) -> Structure:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return scan_structure(path, fmt, len(data), Limits(**limits))


def _still(suffix: str, **options: object) -> bytes:
    image = (pyvips.Image.black(40, 30, bands=3) + 80).cast("uchar")
    data: bytes = image.write_to_buffer(suffix, **options)
    return data


def _animated(suffix: str, frames: int = 5) -> bytes:
    pages = [(pyvips.Image.black(20, 20, bands=3) + 40 * i).cast("uchar") for i in range(frames)]
    image = pyvips.Image.arrayjoin(pages, across=1).copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", 20)
    image.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    data: bytes = image.write_to_buffer(suffix)
    return data


def _with_exif() -> bytes:
    image = (pyvips.Image.black(40, 30, bands=3) + 80).cast("uchar").copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "x" * 2000)
    data: bytes = image.write_to_buffer(".jpg", keep="exif")
    return data


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [(".jpg", InputFormat.JPEG), (".png", InputFormat.PNG), (".webp", InputFormat.WEBP)],
)
def test_still_images_pass(tmp_path: Path, suffix: str, fmt: InputFormat) -> None:
    assert _scan(tmp_path, _still(suffix), fmt).frames is None


@pytest.mark.parametrize(
    ("suffix", "fmt"), [(".gif", InputFormat.GIF), (".webp", InputFormat.WEBP)]
)
def test_animation_frames_are_counted_and_bounded(
    tmp_path: Path, suffix: str, fmt: InputFormat
) -> None:
    data = _animated(suffix)
    assert _scan(tmp_path, data, fmt).frames == 5
    with pytest.raises(ImageTooLarge):
        _scan(tmp_path, data, fmt, max_frames=4)


def test_gif_frames_are_refused_as_soon_as_there_are_too_many(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLarge, match="over 1000 frames"):
        _scan(tmp_path, badinput.gif_with_frames(100_000), InputFormat.GIF)


def test_metadata_is_counted_and_bounded(tmp_path: Path) -> None:
    data = _with_exif()
    found = _scan(tmp_path, data, InputFormat.JPEG)
    assert found.metadata_bytes > 2000
    with pytest.raises(MetadataTooLarge):
        _scan(tmp_path, data, InputFormat.JPEG, max_metadata_bytes=1000)
    for data, fmt in (
        (badinput.jpeg_with_huge_icc(), InputFormat.JPEG),
        (badinput.jpeg_with_huge_exif(), InputFormat.JPEG),
        (badinput.png_with_huge_icc(), InputFormat.PNG),
    ):
        with pytest.raises(MetadataTooLarge):
            _scan(tmp_path, data, fmt)


def _jpeg_segment_past_the_end() -> bytes:
    jpeg = _still(".jpg")
    return jpeg[:2] + b"\xff\xe1\xff\xf0" + b"\x00" * 10


def _png_without_ihdr() -> bytes:
    png = _still(".png")
    return png[:12] + b"IHDX" + png[16:]


def _gif_with_unknown_block() -> bytes:
    gif = badinput.gif_with_frames(1)
    return gif[:-1] + b"?" + b";"


def _webp_chunk_past_the_end() -> bytes:
    webp = bytearray(_still(".webp"))
    struct.pack_into("<I", webp, 16, 10_000)  # the first chunk's size
    return bytes(webp)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (_jpeg_segment_past_the_end(), InputFormat.JPEG),
        (b"\xff\xd8\xff\xd9", InputFormat.JPEG),
        (_png_without_ihdr(), InputFormat.PNG),
        (
            badinput.png_declaring(10, 10)[:33] + badinput.png_declaring(10, 10)[-12:],
            InputFormat.PNG,
        ),
        (_gif_with_unknown_block(), InputFormat.GIF),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", InputFormat.GIF),
        (_webp_chunk_past_the_end(), InputFormat.WEBP),
        (badinput.webp_with_trailer(), InputFormat.WEBP),
    ],
    ids=[
        "jpeg-segment-past-end",
        "jpeg-no-image-data",
        "png-no-ihdr",
        "png-no-idat",
        "gif-unknown-block",
        "gif-no-frames",
        "webp-chunk-past-end",
        "webp-trailer",
    ],
)
def test_malformed_structure_is_undecodable(tmp_path: Path, data: bytes, fmt: InputFormat) -> None:
    with pytest.raises(UndecodableImage):
        _scan(tmp_path, data, fmt)


def test_work_is_bounded_for_pathologically_fragmented_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(structure, "MAX_STEPS", 1_000)
    # One frame whose data is split into 2000 one-byte sub-blocks.
    gif = badinput.gif_with_frames(1)
    frame_data = gif.index(b"\x02\x02D\x01\x00")
    fragmented = gif[: frame_data + 1] + b"\x01\x00" * 2000 + b"\x00;"
    with pytest.raises(UndecodableImage, match="more blocks"):
        _scan(tmp_path, fragmented, InputFormat.GIF)


def test_avif_metadata_is_counted_and_frames_left_to_libheif(tmp_path: Path) -> None:
    # libvips writes a small Exif item; no ICC profile for a plain sRGB image.
    bare = _scan(tmp_path, _still(".avif", keep="none"), InputFormat.AVIF)
    assert bare == Structure(0, None)
    assert _scan(tmp_path, _still(".avif"), InputFormat.AVIF).metadata_bytes > 0
