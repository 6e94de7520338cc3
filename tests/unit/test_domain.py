from __future__ import annotations

import hashlib

import pytest

from pinhole.domain.ids import InvalidImageId, image_id_for_bytes, parse_image_id, shard_of
from pinhole.domain.job import SourceInfo, TranscodeJob
from pinhole.domain.keys import (
    InvalidVariantPath,
    fan_out,
    manifest_key,
    original_key,
    parse_variant_path,
    variant_key,
    variant_path,
)
from pinhole.domain.ladder import PRESETS, PRESETS_BY_NAME, Format, formats_for, ladder
from pinhole.domain.manifest import Manifest, Status

IMAGE_ID = image_id_for_bytes(b"pinhole")


def test_image_id_is_first_128_bits_of_sha256() -> None:
    assert hashlib.sha256(b"pinhole").hexdigest()[:32] == IMAGE_ID
    assert len(IMAGE_ID) == 32
    assert parse_image_id(IMAGE_ID) == IMAGE_ID
    assert 0 <= shard_of(IMAGE_ID) < 4096
    assert shard_of(parse_image_id("fff" + "0" * 29)) == 4095


@pytest.mark.parametrize(
    "bad", ["", "ABC", "g" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, "0" * 31 + "/"]
)
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidImageId):
        parse_image_id(bad)


def test_keys_fan_out_on_the_first_six_hex_chars() -> None:
    i = parse_image_id("abcdef0123456789abcdef0123456789")
    assert fan_out(i) == "ab/cd/ef"
    assert original_key(i) == f"originals/ab/cd/ef/{i}"
    assert manifest_key(i) == f"manifests/ab/cd/ef/{i}.json"
    preset = PRESETS_BY_NAME["474x"]
    assert variant_key(preset, i, Format.JPEG) == f"variants/474x/ab/cd/ef/{i}.jpg"
    assert variant_key(preset, i, Format.AVIF) == f"variants/474x/ab/cd/ef/{i}.avif"
    assert variant_path(preset, i) == f"/474x/ab/cd/ef/{i}"


@pytest.mark.parametrize("fmt", [*Format, None])
@pytest.mark.parametrize("preset", PRESETS)
def test_parse_variant_path_inverts_variant_path(preset: object, fmt: Format | None) -> None:
    path = variant_path(preset, IMAGE_ID, fmt)  # type: ignore[arg-type]
    _, name, a, b, c, last = path.split("/")
    parsed = parse_variant_path(name, f"{a}/{b}/{c}", last)
    assert (parsed.preset, parsed.image_id, parsed.fmt) == (preset, IMAGE_ID, fmt)


@pytest.mark.parametrize(
    ("preset", "fan", "name"),
    [
        ("999x", fan_out(IMAGE_ID), IMAGE_ID + ".jpg"),
        ("474x", "00/00/00", IMAGE_ID + ".jpg"),
        ("474x", fan_out(IMAGE_ID), IMAGE_ID + ".jpeg"),  # one canonical URL per variant
        ("474x", fan_out(IMAGE_ID), IMAGE_ID + ".exe"),
        ("474x", fan_out(IMAGE_ID), "x" + IMAGE_ID[1:] + ".jpg"),
        ("474x", fan_out(IMAGE_ID), IMAGE_ID + ".jpg.png"),
    ],
)
def test_parse_variant_path_refuses_anything_else(preset: str, fan: str, name: str) -> None:
    with pytest.raises(InvalidVariantPath):
        parse_variant_path(preset, fan, name)


def test_ladder_never_upscales_and_keeps_aspect() -> None:
    rungs = ladder(600, 400, has_alpha=False)
    assert len(rungs) == 15
    widths = {(p.name, f): (w, h) for p, f, w, h in rungs}
    assert widths[("236x", Format.JPEG)] == (236, 157)
    assert widths[("474x", Format.WEBP)] == (474, 316)
    assert widths[("736x", Format.AVIF)] == (600, 400)
    assert widths[("originals", Format.JPEG)] == (600, 400)


def test_fallback_is_png_only_with_alpha() -> None:
    assert formats_for(False) == (Format.AVIF, Format.WEBP, Format.JPEG)
    assert formats_for(True) == (Format.AVIF, Format.WEBP, Format.PNG)


def _source(width: int = 1000, height: int = 500, alpha: bool = False) -> SourceInfo:
    return SourceInfo(format="jpeg", width=width, height=height, bytes=1234, has_alpha=alpha)


def test_job_roundtrips_and_is_versioned() -> None:
    job = TranscodeJob(
        image_id=IMAGE_ID, original_key=original_key(IMAGE_ID), source=_source(), submitted_at=1.5
    )
    decoded = TranscodeJob.decode(job.encode())
    assert decoded == job
    assert decoded.version == 1


def test_public_view_lists_every_url_and_srcsets() -> None:
    manifest = Manifest(
        id=IMAGE_ID, status=Status.PENDING, source=_source(), created_at=1.0, updated_at=1.0
    )
    view = manifest.public_view("https://img.example.com/", "https://api.example.com")
    assert view["status"] == "pending"
    assert view["status_url"] == f"https://api.example.com/v1/images/{IMAGE_ID}"
    assert len(view["variants"]) == 15
    assert all(v["bytes"] is None for v in view["variants"])
    assert view["urls"]["474x"] == f"https://img.example.com/474x/{fan_out(IMAGE_ID)}/{IMAGE_ID}"
    jpeg = view["srcset"]["jpeg"].split(", ")
    # 1000 px source: 236, 474, 736 and 1000 (1200x and originals collapse to 1000 once).
    assert [entry.rsplit(" ", 1)[1] for entry in jpeg] == ["236w", "474w", "736w", "1000w"]
    assert jpeg[0].startswith("https://img.example.com/236x/")
    assert set(view["srcset"]) == {"avif", "webp", "jpeg", "auto"}
    assert Manifest.decode(manifest.encode()) == manifest
