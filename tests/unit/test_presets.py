"""The preset model: settings (TOML and PINHOLE_PRESETS) to a checked table, the
sizes each preset gives, the fingerprint every role compares, and the srcset
groups of a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.job import SourceInfo
from pinhole.domain.ladder import (
    DEFAULT_PRESETS,
    DEFAULT_TABLE,
    Format,
    FormatClass,
    Preset,
    cover_region,
    focal_area,
)
from pinhole.domain.manifest import Manifest, Status
from pinhole.settings import Settings

AVATAR = {"width": 256, "height": 256, "fit": "cover", "gravity": "focal"}


def _settings(monkeypatch: pytest.MonkeyPatch, presets: object) -> Settings:
    monkeypatch.delenv("PINHOLE_CONFIG", raising=False)
    monkeypatch.setenv("PINHOLE_PRESETS", json.dumps(presets))
    return Settings()


def test_no_configuration_is_the_five_default_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINHOLE_PRESETS", raising=False)
    monkeypatch.delenv("PINHOLE_CONFIG", raising=False)
    table = Settings().preset_table
    assert table == DEFAULT_TABLE
    assert [p.name for p in table] == ["236x", "474x", "736x", "1200x", "originals"]
    assert table.fingerprint == DEFAULT_TABLE.fingerprint
    # The ladder of the defaults is exactly what it always was.
    assert table.ladder(1000, 500, False)[:3] == [
        (DEFAULT_PRESETS[0], Format.AVIF, 236, 118),
        (DEFAULT_PRESETS[0], Format.WEBP, 236, 118),
        (DEFAULT_PRESETS[0], Format.JPEG, 236, 118),
    ]
    assert table.ladder(1000, 500, True)[-1] == (DEFAULT_PRESETS[4], Format.PNG, 1000, 500)


def test_presets_from_env_json_are_added_after_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(
        monkeypatch,
        {
            "avatar": AVATAR,
            "card": {"width": 640, "height": 360, "fit": "cover", "formats": ["webp", "avif"]},
            "originals": {"lazy": True},
        },
    )
    table = settings.preset_table
    assert [p.name for p in table] == [
        "236x",
        "474x",
        "736x",
        "1200x",
        "originals",
        "avatar",
        "card",
    ]
    avatar = table.get("avatar")
    assert avatar == Preset("avatar", 256, 256, "cover", "focal")
    card = table.get("card")
    assert card is not None
    # Formats keep the ladder's order, whatever order they were listed in.
    assert card.formats == ("avif", "webp")
    assert card.formats_for(False) == (Format.AVIF, Format.WEBP)
    originals = table.get("originals")
    assert originals is not None
    assert originals.lazy
    assert originals.full_size
    assert table.fingerprint != DEFAULT_TABLE.fingerprint


def test_presets_from_a_toml_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text(
        '[presets.avatar]\nwidth = 256\nheight = 256\nfit = "cover"\ngravity = "focal"\n'
        "quality = { avif = 60 }\n\n[presets.tall]\nheight = 400\n"
    )
    monkeypatch.delenv("PINHOLE_PRESETS", raising=False)
    monkeypatch.setenv("PINHOLE_CONFIG", str(config))
    table = Settings().preset_table
    avatar = table.get("avatar")
    assert avatar is not None
    assert (avatar.width, avatar.height, avatar.fit, avatar.gravity) == (256, 256, "cover", "focal")
    assert avatar.quality_for(Format.AVIF) == 60
    assert avatar.quality_for(Format.WEBP) is None
    tall = table.get("tall")
    assert tall is not None
    assert tall.target_size(1000, 2000) == (200, 400)


def test_the_fingerprint_follows_every_field_and_only_the_table() -> None:
    base = (*DEFAULT_PRESETS, Preset("avatar", 256, 256, "cover", "focal"))
    same = type(DEFAULT_TABLE)(base)
    assert same.fingerprint == type(DEFAULT_TABLE)(base).fingerprint
    changed = [
        Preset("avatar", 256, 256, "cover", "attention"),
        Preset("avatar", 256, 255, "cover", "focal"),
        Preset("avatar", 256, 256, "cover", "focal", ("avif",)),
        Preset("avatar", 256, 256, "cover", "focal", quality=(("avif", 60),)),
        Preset("avatar", 256, 256, "cover", "focal", lazy=True),
        Preset("avatar2", 256, 256, "cover", "focal"),
    ]
    prints = {type(DEFAULT_TABLE)((*DEFAULT_PRESETS, p)).fingerprint for p in changed}
    assert len(prints) == len(changed)
    assert same.fingerprint not in prints


@pytest.mark.parametrize(
    ("presets", "message"),
    [
        ({"Avatar": AVATAR}, "preset name"),
        ({"av atar": AVATAR}, "preset name"),
        ({"s": AVATAR}, "preset name"),
        ({"a" * 33: AVATAR}, "preset name"),
        ({"huge": {"width": 20_000}}, "larger than the size limit"),
        ({"zero": {"width": 0}}, "greater than 0"),
        ({"avatar": AVATAR, "same": AVATAR}, "are the same preset"),
        ({"again": {"width": 236}}, "are the same preset"),
        ({"odd": {"width": 10, "formats": ["gif"]}}, "avif"),
        ({"none": {"width": 10, "formats": []}}, "at least one format"),
        ({"twice": {"width": 10, "formats": ["webp", "webp"]}}, "listed twice"),
        ({"half": {"width": 10, "fit": "cover"}}, "both a width and a height"),
        ({"fit": {"width": 10, "fit": "fill"}}, "inside"),
        ({"grav": {"width": 10, "gravity": "focal"}}, "only applies to a cover"),
        ({"q": {"width": 10, "quality": {"avif": 101}}}, "1..100"),
        ({"q": {"width": 10, "formats": ["webp"], "quality": {"avif": 50}}}, "not among"),
        ({"extra": {"width": 10, "crop": "yes"}}, "Extra inputs"),
    ],
)
def test_a_bad_table_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, presets: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(monkeypatch, presets)


def test_sizes_inside_and_cover_never_upscale() -> None:
    inside_box = Preset("box", 400, 400)
    assert inside_box.target_size(1000, 500) == (400, 200)
    assert inside_box.target_size(500, 1000) == (200, 400)
    assert inside_box.target_size(100, 50) == (100, 50)
    by_height = Preset("h", None, 300)
    assert by_height.target_size(1000, 600) == (500, 300)
    assert by_height.target_size(100, 60) == (100, 60)
    cover = Preset("card", 640, 360, "cover")
    assert cover.target_size(4000, 3000) == (640, 360)
    assert cover.target_size(360, 4000) == (360, 202)
    # Smaller than the box: the largest box-shaped crop the source holds.
    assert cover.target_size(320, 320) == (320, 180)
    square = Preset("sq", 256, 256, "cover")
    assert square.target_size(200, 100) == (100, 100)


def test_cover_region_keeps_the_focal_point_inside_and_as_central_as_it_can() -> None:
    # A 16:9 box from a 1000x1000 picture: full width, 562 rows.
    assert cover_region(1000, 1000, 640, 360, None) == (0, 219, 1000, 562)
    assert cover_region(1000, 1000, 640, 360, (0.5, 0.1)) == (0, 0, 1000, 562)
    assert cover_region(1000, 1000, 640, 360, (0.5, 0.95)) == (0, 438, 1000, 562)
    left, top, _w, h = cover_region(1000, 1000, 640, 360, (0.5, 0.6))
    assert (left, top) == (0, 319)
    assert top <= 600 <= top + h
    # A square from a landscape picture, the focal point near the right edge.
    assert cover_region(1600, 900, 256, 256, (0.9, 0.5)) == (700, 0, 900, 900)
    for fx in (0.0, 0.13, 0.5, 0.77, 1.0):
        for fy in (0.0, 0.4, 1.0):
            x0, y0, cw, ch = cover_region(1600, 900, 300, 200, (fx, fy))
            assert x0 <= fx * 1600 <= x0 + cw
            assert y0 <= fy * 900 <= y0 + ch
            assert 0 <= x0 <= 1600 - cw
            assert 0 <= y0 <= 900 - ch
    assert focal_area(100, 100, 50, 50, (0.5, 0.5)) == (25, 25, 50, 50)


def test_a_preset_without_a_format_negotiates_the_next_one_down() -> None:
    webp_only = Preset("w", 100, formats=("webp", "fallback"))
    assert webp_only.format_for_class(FormatClass.AVIF, False) is Format.WEBP
    assert webp_only.format_for_class(FormatClass.FALLBACK, True) is Format.PNG
    avif_only = Preset("a", 100, formats=("avif",))
    assert avif_only.format_for_class(FormatClass.WEBP, False) is None


def test_manifests_list_every_preset_and_group_srcsets_by_aspect() -> None:
    table = type(DEFAULT_TABLE)(
        (
            *DEFAULT_PRESETS,
            Preset("avatar", 128, 128, "cover", "focal"),
            Preset("avatar-2x", 256, 256, "cover", "focal"),
            Preset("card", 640, 360, "cover", formats=("webp", "fallback")),
        )
    )
    image_id = image_id_for_bytes(b"presets")
    manifest = Manifest(
        id=image_id,
        status=Status.PENDING,
        source=SourceInfo(format="jpeg", width=2000, height=1000, bytes=1, has_alpha=False),
        created_at=0.0,
        updated_at=0.0,
    )
    view = manifest.public_view("http://edge", "http://ingest", presets=table)
    sizes = {(v["preset"], v["format"]): (v["width"], v["height"]) for v in view["variants"]}
    assert sizes[("avatar", "avif")] == (128, 128)
    assert sizes[("avatar-2x", "jpeg")] == (256, 256)
    assert sizes[("card", "webp")] == (640, 360)
    assert ("card", "avif") not in sizes
    assert sizes[("736x", "avif")] == (736, 368)
    assert set(view["urls"]) == {p.name for p in table}
    # The width ladder is as it was; the cover presets are groups of their own.
    assert "avatar" not in view["srcset"]["auto"]
    assert " 236w" in view["srcset"]["auto"]
    fan = f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"
    assert view["srcset_groups"]["1x1"]["webp"] == (
        f"http://edge/avatar/{fan}/{image_id}.webp 1x, "
        f"http://edge/avatar-2x/{fan}/{image_id}.webp 2x"
    )
    assert view["srcset_groups"]["1x1"]["auto"].endswith(f"/avatar-2x/{fan}/{image_id} 2x")
    assert set(view["srcset_groups"]["16x9"]) == {"webp", "jpeg", "auto"}
    assert view["presets"] == table.fingerprint
