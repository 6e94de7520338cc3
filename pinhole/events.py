"""Lifecycle events published on the events topic (``image.ready``, ``image.failed``)."""

from __future__ import annotations

import json

from pinhole.domain.ids import ImageId
from pinhole.ports import Message


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
