"""The signed form of a ladder variant and the private Cache-Control policy."""

from __future__ import annotations

from pinhole import cache_policy
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import variant_path
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.domain.signing import (
    expiry_for,
    ladder_tail,
    signature,
    signed_ladder_url,
    verify,
)

IMAGE = image_id_for_bytes(b"private bytes")
PRESET = PRESETS_BY_NAME["474x"]


def test_a_signed_ladder_url_is_the_unsigned_path_behind_the_signed_prefix() -> None:
    url = signed_ladder_url("https://img.example/", "k", PRESET, IMAGE, Format.WEBP, 2_000_000_000)
    tail = f"/e2000000000{variant_path(PRESET, IMAGE, Format.WEBP)}"
    assert ladder_tail(PRESET, IMAGE, Format.WEBP, 2_000_000_000) == tail
    assert url == f"https://img.example/s/{signature('k', tail)}{tail}"
    assert verify(["old", "k"], signature("k", tail), tail)
    # The expiry is inside the signed part: another expiry needs another signature.
    assert not verify(["k"], signature("k", tail), tail.replace("e2000000000", "e2000000001"))


def test_handed_out_expiries_are_rounded_so_repeated_answers_name_one_url() -> None:
    assert expiry_for(1_000_000.0, 3600) == expiry_for(1_000_070.0, 3600) == 1_003_680
    for now in (1_000_000.0, 1_000_359.0, 1_000_360.5):
        assert 3600 <= expiry_for(now, 3600) - now <= 3600 * 1.1


def test_a_private_answer_lives_no_longer_than_its_signature() -> None:
    assert cache_policy.private_until(90.9) == "private, max-age=90"
    assert cache_policy.private_until(10 * cache_policy.IMMUTABLE_SECONDS) == (
        f"private, max-age={cache_policy.IMMUTABLE_SECONDS}"
    )
    # Within the skew allowance past the expiry: served, stored by nobody.
    assert cache_policy.private_until(0.5) == "private, no-store"
    assert cache_policy.private_until(-5) == "private, no-store"
