"""Lifecycle events on the events topic: their type names, and the one place a
message is made from an event and read back into one.

Producers (the transcoder, ingest's delete) and consumers (the edge's purge
listener, ``pinhole cdn-purge``) use these names, never string literals.
"""

from __future__ import annotations

import json
from typing import Final

from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.ports import Message

IMAGE_READY: Final = "image.ready"
IMAGE_FAILED: Final = "image.failed"
IMAGE_DELETED: Final = "image.deleted"


def surrogate_key(image_id: ImageId) -> str:
    """The CDN purge tag for every URL of one image."""
    return f"img-{image_id}"


def event_message(
    kind: str, image_id: ImageId, *, request_id: str = "", **fields: object
) -> Message:
    """``request_id`` is the upload's, so a consumer can tie the event to its request."""
    body = {"type": kind, "id": image_id, "surrogate_key": surrogate_key(image_id), **fields}
    headers = {"type": kind}
    if request_id:
        body["request_id"] = request_id
        headers["request-id"] = request_id
    return Message(key=image_id, value=json.dumps(body).encode(), headers=headers)


def image_id_of_event(message: Message, kind: str) -> ImageId | None:
    """The image id of an event of type ``kind``; ``None`` for any other message
    (another type, or bytes that are not one of ours)."""
    try:
        body = json.loads(message.value)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("type") != kind:
        return None
    raw = body.get("id")
    if not isinstance(raw, str):
        return None
    try:
        return parse_image_id(raw)
    except InvalidImageId:
        return None
