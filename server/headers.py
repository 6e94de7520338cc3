"""Response headers for variants: the one policy function the edge applies."""

from __future__ import annotations

from email.utils import formatdate

from pinhole import cache_policy
from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import Format
from pinhole.events import surrogate_key
from server.entry import Entry


def variant_headers(
    entry: Entry, fmt: Format, image_id: ImageId, negotiated: bool
) -> dict[str, str]:
    tag = surrogate_key(image_id)
    headers = {
        "Content-Type": fmt.media_type,
        "Cache-Control": cache_policy.IMMUTABLE,
        "ETag": entry.etag,
        "Last-Modified": formatdate(entry.last_modified, usegmt=True),
        "X-Content-Type-Options": "nosniff",
        "Surrogate-Key": tag,
        "Cache-Tag": tag,
        "Access-Control-Allow-Origin": "*",
        "Timing-Allow-Origin": "*",
    }
    if negotiated:
        # The same URL answers differently per Accept; explicit extensions never vary.
        headers["Vary"] = "Accept"
    return headers


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (c.strip().removeprefix("W/") for c in if_none_match.split(",")[:32])
    return etag in candidates
