"""The HEIF/AVIF container walk at ingest, before libvips opens the header: the
primary image's size from its ``ispe`` (turned by ``irot``), the metadata budget
(ICC profiles, Exif and XMP items), and malformed or fragmented item tables."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ingest import structure
from ingest.sniff import InputFormat
from ingest.structure import scan_structure
from pinhole.errors import ImageTooLarge, MetadataTooLarge, UndecodableImage
from pinhole.settings import Limits
from tests.support.heif import heif_sample


def _scan(tmp_path: Path, data: bytes, **limits: int) -> structure.Structure:
    path = tmp_path / "upload.heic"
    path.write_bytes(data)
    return scan_structure(path, InputFormat.HEIF, len(data), Limits(**limits))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


FTYP = _box(b"ftyp", b"heic\0\0\0\0mif1heic")


@pytest.mark.parametrize(
    "name",
    [
        "pug.heic",
        "arrow.heic",
        "guitar_cw90.hif",
        "alpha.heic",
        "bird_burst.heic",
        "LA_8__29x100.heif",
    ],
)
def test_real_files_pass(tmp_path: Path, name: str) -> None:
    found = _scan(tmp_path, heif_sample(name))
    assert found.frames is None  # libvips' header counts the top-level images
    assert 0 <= found.metadata_bytes < Limits().max_metadata_bytes


def test_icc_and_exif_count_as_metadata(tmp_path: Path) -> None:
    # heif-enc kept the 480-byte P3 profile; pug.heic has an iPhone ICC and Exif item.
    assert _scan(tmp_path, heif_sample("photo-p3-720x1440.heic")).metadata_bytes >= 480
    pug = _scan(tmp_path, heif_sample("pug.heic")).metadata_bytes
    assert pug > 2000
    with pytest.raises(MetadataTooLarge):
        _scan(tmp_path, heif_sample("pug.heic"), max_metadata_bytes=pug - 1)


def test_a_200_megapixel_heic_is_too_large_from_its_ispe(tmp_path: Path) -> None:
    """libvips' own header read gives up on this file (libheif's security limit),
    which would have said 'undecodable'; the walk names the real reason."""
    with pytest.raises(ImageTooLarge, match="199756800 pixels"):
        _scan(tmp_path, heif_sample("200MP.heic"))


def test_the_size_is_checked_upright(tmp_path: Path) -> None:
    # arrow.heic is stored 4032x3024 with irot 270°: upright it is 3024x4032.
    data = heif_sample("arrow.heic")
    _scan(tmp_path, data, max_width=3024, max_height=4032)
    with pytest.raises(ImageTooLarge, match="3024x4032"):
        _scan(tmp_path, data, max_height=4031)


def test_a_meta_box_over_the_budget_is_refused_unread(tmp_path: Path) -> None:
    data = FTYP + _box(b"meta", b"\0" * (64 * 1024))
    with pytest.raises(MetadataTooLarge):
        _scan(tmp_path, data, max_metadata_bytes=32 * 1024)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_box(b"free", b"") + FTYP, "starts with its ftyp"),
        (FTYP + _box(b"mdat", b"\0" * 100), "no meta box"),
        (FTYP + struct.pack(">I4s", 4096, b"meta") + b"\0" * 20, "past its container"),
        (FTYP + _box(b"meta", b"\0\0\0\0" + _box(b"hdlr", b"\0" * 24)), "no primary image"),
    ],
    ids=["no-ftyp", "no-meta", "cut-short", "no-primary"],
)
def test_malformed_heif_is_undecodable(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableImage, match=reason):
        _scan(tmp_path, data)


def test_a_real_file_cut_inside_its_meta_box_is_undecodable(tmp_path: Path) -> None:
    with pytest.raises(UndecodableImage):
        _scan(tmp_path, heif_sample("pug.heic")[:400])


def test_an_item_table_of_millions_of_boxes_stops_at_the_step_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(structure, "MAX_STEPS", 1_000)
    meta = b"\0\0\0\0" + _box(b"free", b"") * 2_000
    with pytest.raises(UndecodableImage, match="more blocks"):
        _scan(tmp_path, FTYP + _box(b"meta", meta))
