"""Hostile animations are refused from their block headers, before any decoder:
too many frames, too many pixels over all frames, frames outside the screen."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from ingest.probe import probe_header
from ingest.sniff import InputFormat
from ingest.structure import scan_structure
from pinhole.errors import ImageTooLarge, UndecodableImage
from pinhole.settings import Limits
from tests.support.animations import (
    gif_big_screen,
    gif_with_frame_outside_screen,
    package_animation,
    panning,
    webp_frame_moved,
)

PHOTO = "autumn-2560x1600.jpg"


def _scan(tmp_path: Path, data: bytes, fmt: InputFormat, limits: Limits) -> int | None:
    path = tmp_path / f"upload.{fmt.value}"
    path.write_bytes(data)
    return scan_structure(path, fmt, len(data), limits).frames


@pytest.mark.parametrize("fmt", [InputFormat.GIF, InputFormat.WEBP])
def test_pixels_over_all_frames_are_bounded(tmp_path: Path, fmt: InputFormat) -> None:
    made = panning(PHOTO, 200, 100, 10, fmt=fmt.value)  # 200 000 pixels in all
    assert _scan(tmp_path, made.data, fmt, Limits(max_animation_pixels=200_000)) == 10
    with pytest.raises(ImageTooLarge, match="over 199999 pixels over all its frames"):
        _scan(tmp_path, made.data, fmt, Limits(max_animation_pixels=199_999))


def test_the_default_pixel_budget_refuses_a_tiny_file_with_a_huge_screen(tmp_path: Path) -> None:
    # 13 frames of 4 MP: 52 MP to decode from a file of a few hundred bytes.
    data = gif_big_screen(2000, 2000, 13)
    assert len(data) < 1000
    with pytest.raises(ImageTooLarge, match="over 50000000 pixels"):
        _scan(tmp_path, data, InputFormat.GIF, Limits())
    assert _scan(tmp_path, gif_big_screen(2000, 2000, 12), InputFormat.GIF, Limits()) == 12


def test_a_still_image_is_not_held_to_the_animation_budget(tmp_path: Path) -> None:
    assert (
        _scan(
            tmp_path,
            gif_big_screen(2000, 2000, 1),
            InputFormat.GIF,
            Limits(max_animation_pixels=1000),
        )
        == 1
    )


def test_a_gif_frame_outside_the_logical_screen_is_refused(tmp_path: Path) -> None:
    inside = gif_with_frame_outside_screen(offset=8)
    assert _scan(tmp_path, inside, InputFormat.GIF, Limits()) == 2
    outside = gif_with_frame_outside_screen(offset=12)
    # libvips itself would decode it (clipping the frame): the walk refuses it first.
    assert pyvips.Image.new_from_buffer(outside, "", n=-1).get("n-pages") == 2
    with pytest.raises(UndecodableImage, match=r"frame 2 \(8x8 at 12,12\) lies outside"):
        _scan(tmp_path, outside, InputFormat.GIF, Limits())


@pytest.mark.parametrize("name", ["test_extents.gif", "decompression_bomb_extents.gif"])
def test_real_gifs_with_frames_outside_the_screen_are_refused(tmp_path: Path, name: str) -> None:
    """Pillow's own test files (its sdist on PyPI) for frames past the screen."""
    with pytest.raises(UndecodableImage, match="lies outside the 100x100 logical screen"):
        _scan(tmp_path, package_animation(name), InputFormat.GIF, Limits())


def test_a_webp_frame_outside_the_canvas_is_refused(tmp_path: Path) -> None:
    made = panning(PHOTO, 64, 48, 3, fmt="webp")
    assert _scan(tmp_path, made.data, InputFormat.WEBP, Limits()) == 3
    moved = webp_frame_moved(made.data, 2, 40, 0)
    with pytest.raises(UndecodableImage, match=r"frame 2 \(\d+x\d+ at 40,0\) lies outside"):
        _scan(tmp_path, moved, InputFormat.WEBP, Limits())


@pytest.mark.parametrize("name", ["chi.gif", "iss634.gif", "iss634.webp", "dispose_bgnd.gif"])
def test_real_animations_pass_the_walk(tmp_path: Path, name: str) -> None:
    data = package_animation(name)
    fmt = InputFormat.WEBP if name.endswith(".webp") else InputFormat.GIF
    assert (_scan(tmp_path, data, fmt, Limits()) or 0) > 1


def test_the_header_probe_bounds_pixels_over_all_frames(tmp_path: Path) -> None:
    made = panning(PHOTO, 200, 100, 10)
    path = tmp_path / "a.gif"
    path.write_bytes(made.data)
    info = probe_header(path, InputFormat.GIF, len(made.data), Limits())
    assert (info.frames, info.width, info.height, info.animated) == (10, 200, 100, True)
    with pytest.raises(ImageTooLarge, match="200000 pixels over its 10 frames"):
        probe_header(path, InputFormat.GIF, len(made.data), Limits(max_animation_pixels=199_999))
