"""Image ids: the first 128 bits of the SHA-256 of the original bytes.

Same bytes, same id: dedup and idempotency come for free and URLs are
immutable. The id also carries its shard (see ``shard_of``).
"""

from __future__ import annotations

import hashlib
import re
from typing import NewType

ImageId = NewType("ImageId", str)

_ID_RE = re.compile(r"[0-9a-f]{32}")
VIRTUAL_SHARDS = 4096


class InvalidImageId(ValueError):
    """Raised for a string that is not 32 lowercase hex characters."""


def image_id_from_digest(sha256_digest: bytes) -> ImageId:
    if len(sha256_digest) != 32:
        raise ValueError("expected a 32-byte SHA-256 digest")
    return ImageId(sha256_digest[:16].hex())


def image_id_for_bytes(data: bytes) -> ImageId:
    return image_id_from_digest(hashlib.sha256(data).digest())


def parse_image_id(text: str) -> ImageId:
    if not _ID_RE.fullmatch(text):
        raise InvalidImageId(text[:64])
    return ImageId(text)


def shard_of(image_id: ImageId) -> int:
    """Virtual shard 0..4095: the id's first three hex characters."""
    return int(image_id[:3], 16)
