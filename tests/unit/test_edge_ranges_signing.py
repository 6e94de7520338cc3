from __future__ import annotations

import pytest

from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from server.ranges import Unsatisfiable, byte_range
from server.signing import parse_size, sign_path, signature, signed_tail, verify

IMAGE = ImageId("0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=50-5000", (50, 99)),
        ("bytes=9-1", None),  # invalid: ignored, whole body
        ("bytes=0-1,4-5", None),  # several ranges: whole body
        ("bytes=-", None),
        ("items=0-1", None),
        ("bytes=" + "9" * 30 + "-", None),  # absurd numbers are not parsed at all
    ],
)
def test_single_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, 100)


def test_signatures_rotate_and_bind_every_part_of_the_path() -> None:
    tail = signed_tail(640, 480, "fill-attention", IMAGE, Format.WEBP)
    assert tail == f"/640x480/fill-attention/01/23/45/{IMAGE}.webp"
    path = sign_path("new", tail)
    sig = path.split("/")[2]
    assert path == f"/s/{sig}{tail}"
    assert "=" not in sig
    assert verify(["new", "old"], sig, tail)
    assert verify(["old", "new"], sig, tail)
    assert not verify(["old"], sig, tail)
    assert not verify([], sig, tail)
    for other in (
        signed_tail(641, 480, "fill-attention", IMAGE, Format.WEBP),
        signed_tail(640, 480, "fit", IMAGE, Format.WEBP),
        signed_tail(640, 480, "fill-attention", IMAGE, Format.AVIF),
        signed_tail(640, 480, "fill-attention", IMAGE),
    ):
        assert not verify(["new"], sig, other)
    assert not verify(["new"], "é" + sig[1:], tail)
    assert signature("new", tail) == sig


def test_sizes_parse_strictly() -> None:
    assert parse_size("640x480") == (640, 480)
    # A 0 side follows the aspect; one spelling per size, so no leading zeros.
    assert parse_size("640x0") == (640, 0)
    assert parse_size("0x480") == (0, 480)
    for bad in ("0x0", "00x10", "10x00", "010x5", "640X480", "640x", "x480", "-1x5"):
        assert parse_size(bad) is None, bad
    for bad in ("123456x1", "1e3x5", " 1x1"):
        assert parse_size(bad) is None, bad
    with pytest.raises(ValueError, match="fit must be"):
        signed_tail(1, 1, "stretch", IMAGE)
