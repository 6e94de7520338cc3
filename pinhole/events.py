"""Lifecycle events on the events topic: their type names, and the one place a
message is made from an event and read back into one.

Producers (the transcoder, ingest's delete) and consumers (the edge's purge
listener, ``pinhole cdn-purge``) use these names, never string literals.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Final

from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.record import validate_alias, validate_owner
from pinhole.errors import PinholeError
from pinhole.ports import Message

IMAGE_READY: Final = "image.ready"
IMAGE_FAILED: Final = "image.failed"
IMAGE_DELETED: Final = "image.deleted"
# A record of the image was made private, public, or deleted, and the image may
# have changed between public and private (every record private): every edge
# forgets what it knew, `pinhole cdn-purge` purges the image's public URLs.
IMAGE_VISIBILITY: Final = "image.visibility"
# What an owner's alias names changed (moved, cleared, its record deleted), or,
# with no alias, every alias of the owner (the owner was deleted).
ALIAS_MOVED: Final = "alias.moved"


def surrogate_key(image_id: ImageId) -> str:
    """The CDN purge tag for every URL of one image."""
    return f"img-{image_id}"


def alias_surrogate_key(owner: str, alias: str | None = None) -> str:
    """The CDN purge tag of an alias's stable URLs; without ``alias``, the tag
    every alias URL of the owner carries too."""
    return f"alias-{owner}" if alias is None else f"alias-{owner}-{alias}"


def alias_message(owner: str, alias: str | None) -> Message:
    body = {
        "type": ALIAS_MOVED,
        "event_id": f"evt_{uuid.uuid4().hex}",
        "time": time.time(),
        "owner": owner,
        "alias": alias,
        "surrogate_key": alias_surrogate_key(owner, alias),
    }
    return Message(key=owner, value=json.dumps(body).encode(), headers={"type": ALIAS_MOVED})


def alias_of_event(message: Message) -> tuple[str, str | None] | None:
    """(owner, alias or ``None`` for all of them) of an ``alias.moved`` event;
    ``None`` for any other message."""
    try:
        body = json.loads(message.value)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("type") != ALIAS_MOVED:
        return None
    owner, alias = body.get("owner"), body.get("alias")
    if not isinstance(owner, str) or not (alias is None or isinstance(alias, str)):
        return None
    try:
        validate_owner(owner)
        if alias is not None:
            validate_alias(alias)
    except PinholeError:
        return None
    return owner, alias


def event_message(
    kind: str, image_id: ImageId, *, request_id: str = "", **fields: object
) -> Message:
    """``request_id`` is the upload's, so a consumer can tie the event to its request.
    ``event_id`` is unique per event and ``time`` is when it happened: webhooks
    send them as ``webhook-id`` and the payload's ``timestamp``."""
    body = {
        "type": kind,
        "id": image_id,
        "surrogate_key": surrogate_key(image_id),
        "event_id": f"evt_{uuid.uuid4().hex}",
        "time": time.time(),
        **fields,
    }
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
