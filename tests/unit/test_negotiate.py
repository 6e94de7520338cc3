from __future__ import annotations

import pytest

from pinhole.domain.ladder import FormatClass
from server.negotiate import accept_class


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, FormatClass.FALLBACK),
        ("", FormatClass.FALLBACK),
        ("*/*", FormatClass.FALLBACK),
        ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", FormatClass.AVIF),
        ("image/webp,*/*", FormatClass.WEBP),
        ("IMAGE/WEBP", FormatClass.WEBP),
        ("image/avif;q=0, image/webp;q=0.5", FormatClass.WEBP),
        ("image/avif;q=junk,image/png", FormatClass.FALLBACK),
        ("text/html,application/xhtml+xml", FormatClass.FALLBACK),
        (";;;,,,=q", FormatClass.FALLBACK),
        ("image/webp;q=0.1;level=1", FormatClass.WEBP),
    ],
)
def test_accept_reduces_to_one_class(accept: str | None, expected: FormatClass) -> None:
    assert accept_class(accept) is expected


def test_junk_accept_is_bounded() -> None:
    assert accept_class("x/y," * 100_000 + "image/avif") is FormatClass.FALLBACK
