"""Property-based tests over sniffing and validation (hypothesis, bounded for CI).

Whatever bytes arrive, validation ends in one of two ways: a ``SourceInfo``
within every limit, or a ``PinholeError`` with a 4xx status. Never another
exception (a 500), and never an image over the limits let through.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pyvips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.sniff import SNIFF_BYTES, InputFormat, sniff
from ingest.spool import TAIL_BYTES, Spooled
from ingest.validate import validate
from pinhole.app.vips import configure_vips
from pinhole.domain.job import SourceInfo
from pinhole.errors import PinholeError
from pinhole.settings import Limits

configure_vips()

LIMITS = Limits(max_width=2000, max_height=2000, max_pixels=1_000_000, max_frames=10)
BOUNDED = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

MAGIC = {
    InputFormat.JPEG: b"\xff\xd8\xff",
    InputFormat.PNG: b"\x89PNG\r\n\x1a\n",
    InputFormat.GIF: b"GIF89a",
    InputFormat.WEBP: b"RIFF\x00\x00\x00\x00WEBP",
    InputFormat.AVIF: b"\x00\x00\x00\x1cftypavif",
}


def _seed(suffix: str) -> bytes:
    image = (pyvips.Image.black(48, 32, bands=3) + 120).cast("uchar")
    data: bytes = image.write_to_buffer(suffix)
    return data


SEEDS = [_seed(s) for s in (".jpg", ".png", ".gif", ".webp", ".avif")]


def _validate(data: bytes) -> SourceInfo | PinholeError:
    with tempfile.NamedTemporaryFile(prefix="pinhole-prop-") as f:
        f.write(data)
        f.flush()
        spooled = Spooled(
            Path(f.name),
            len(data),
            hashlib.sha256(data).digest(),
            data[:SNIFF_BYTES],
            data[-TAIL_BYTES:] if data else b"",
        )
        try:
            return validate(spooled, LIMITS)
        except PinholeError as exc:
            return exc


def _check(outcome: SourceInfo | PinholeError) -> None:
    if isinstance(outcome, PinholeError):
        assert 400 <= outcome.status < 500, outcome
        assert outcome.code
        assert outcome.message
        return
    assert outcome.width <= LIMITS.max_width
    assert outcome.height <= LIMITS.max_height
    assert outcome.width * outcome.height <= LIMITS.max_pixels
    assert outcome.frames <= LIMITS.max_frames


@BOUNDED
@given(st.binary(max_size=64))
def test_sniff_decides_from_magic_bytes_alone(head: bytes) -> None:
    fmt = sniff(head)
    if fmt is InputFormat.JPEG:
        assert head.startswith(b"\xff\xd8\xff")
    elif fmt is InputFormat.PNG:
        assert head.startswith(b"\x89PNG\r\n\x1a\n")
    elif fmt is InputFormat.GIF:
        assert head[:6] in (b"GIF87a", b"GIF89a")
    elif fmt is InputFormat.WEBP:
        assert head[:4] == b"RIFF"
        assert head[8:12] == b"WEBP"
    elif fmt is not None:
        assert head[4:8] == b"ftyp"


@BOUNDED
@given(st.sampled_from(list(MAGIC)), st.binary(max_size=600))
def test_any_bytes_behind_real_magic_get_a_clean_answer(fmt: InputFormat, rest: bytes) -> None:
    _check(_validate(MAGIC[fmt] + rest))


@BOUNDED
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
    st.binary(max_size=64),
)
def test_damaged_real_images_get_a_clean_answer(
    seed: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    damaged = bytes(data[: max(1, len(data) - cut % len(data))]) + tail
    _check(_validate(damaged))


def test_undamaged_seeds_are_accepted() -> None:
    for seed in SEEDS:
        outcome = _validate(seed)
        assert isinstance(outcome, SourceInfo), outcome
