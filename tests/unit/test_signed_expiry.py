"""Expiring signatures as functions: the tail, the expiry's one spelling, the skew
allowance, and the Cache-Control an expiring rendition gets."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pinhole import cache_policy
from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from server.signing import (
    parse_expires,
    remaining_life,
    rendition_key,
    sign_path,
    signed_tail,
    verify,
)

IMAGE = ImageId("0123456789abcdef0123456789abcdef")
FAN = "01/23/45"


def test_a_url_without_an_expiry_is_byte_for_byte_what_it_was() -> None:
    tail = signed_tail(640, 480, "fit", IMAGE, Format.WEBP)
    assert tail == f"/640x480/fit/{FAN}/{IMAGE}.webp"
    mac = hmac.new(b"k", tail.encode(), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert sign_path("k", tail) == f"/s/{sig}{tail}"


def test_the_expiry_is_inside_the_signed_part() -> None:
    tail = signed_tail(640, 480, "fit", IMAGE, Format.WEBP, expires=1_900_000_000)
    assert tail == f"/e1900000000/640x480/fit/{FAN}/{IMAGE}.webp"
    sig = sign_path("k", tail).split("/")[2]
    assert verify(["k"], sig, tail)
    for other in (1_900_000_001, None):
        assert not verify(["k"], sig, signed_tail(640, 480, "fit", IMAGE, Format.WEBP, other))
    # One hot-cache entry for every expiry of a rendition (and its plain URL).
    assert rendition_key(640, 480, "fit", IMAGE, Format.WEBP) == (
        f"signed/640x480/fit/{FAN}/{IMAGE}.webp"
    )


@pytest.mark.parametrize("expires", [0, -1, 10**12])
def test_an_expiry_that_has_no_spelling_is_refused(expires: int) -> None:
    with pytest.raises(ValueError, match="expires must be a positive Unix time"):
        signed_tail(1, 1, "fit", IMAGE, expires=expires)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("e1900000000", 1_900_000_000),
        ("e1", 1),
        ("e999999999999", 999_999_999_999),
        ("e0", None),
        ("e01", None),  # one spelling per expiry
        ("e", None),
        ("e-1", None),
        ("e1e3", None),
        ("1900000000", None),
        ("e1000000000000", None),
        ("e\u0661\u0662\u0663", None),  # Arabic-Indic digits: not ASCII
    ],
)
def test_parse_expires(text: str, expected: int | None) -> None:
    assert parse_expires(text) == expected


def test_remaining_life_and_the_skew_allowance() -> None:
    assert remaining_life(1000, now=400.0, skew_seconds=30) == 600.0
    assert remaining_life(1000, now=1000.0, skew_seconds=30) == 0.0
    assert remaining_life(1000, now=1030.0, skew_seconds=30) == -30.0
    assert remaining_life(1000, now=1030.5, skew_seconds=30) is None
    assert remaining_life(1000, now=1000.5, skew_seconds=0) is None


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (600.0, "public, max-age=600"),
        (600.9, "public, max-age=600"),  # rounded down: never past the expiry
        (1.0, "public, max-age=1"),
        (0.5, "no-store"),
        (0.0, "no-store"),
        (-20.0, "no-store"),  # within the skew allowance: served, never stored
        (10.0 * cache_policy.IMMUTABLE_SECONDS, "public, max-age=31536000"),
    ],
)
def test_an_expiring_rendition_is_cached_no_longer_than_its_life(
    remaining: float, expected: str
) -> None:
    assert cache_policy.expiring_signed(remaining) == expected
    assert cache_policy.IMMUTABLE == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (600.0, "public, max-age=5"),
        (3.7, "public, max-age=3"),
        (0.9, "no-store"),
        (-5.0, "no-store"),
    ],
)
def test_a_pending_answer_for_an_expiring_url_is_cached_no_longer_than_its_life(
    remaining: float, expected: str
) -> None:
    assert cache_policy.expiring_pending(remaining) == expected
    assert cache_policy.PENDING == "public, max-age=5"
