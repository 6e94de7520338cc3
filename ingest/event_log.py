"""``GET /v1/events?after=<cursor>&limit=``: the events topic, paged, for a
consumer that was down (a webhook endpoint that missed deliveries, an app that
was offline) to catch up from where it stopped.

The cursor is opaque: the next offset of every partition of the events topic,
which the broker keeps across restarts of every Pinhole process, so a cursor
stays valid for as long as the broker retains the events (Kafka's retention;
the in-process queue of ``pinhole up`` keeps them only while it runs). A cursor
from before the broker lost its log reads on from the log's new end. Without
``after`` the page starts at the oldest event the broker still holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from pinhole import cache_policy
from pinhole.errors import BadRequest, InvalidCursor
from pinhole.ports import JobQueue

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def encode_cursor(positions: dict[int, int]) -> str:
    raw = json.dumps({str(p): o for p, o in sorted(positions.items())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        positions = {int(p): int(o) for p, o in value.items()}
    except (binascii.Error, ValueError, AttributeError, TypeError):
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this listing handed out") from None
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this listing handed out")
    return positions


def _event(value: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(value)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


async def list_events(request: web.Request, queue: JobQueue, topic: str) -> web.Response:
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"limit is a whole number from 1 to {MAX_LIMIT}.")
    after = request.query.get("after")
    positions = decode_cursor(after) if after else None
    page = await queue.read_log(topic, positions, limit=int(raw_limit))
    events = [e for entry in page.entries if (e := _event(entry.message.value)) is not None]
    return web.json_response(
        {"events": events, "cursor": encode_cursor(page.positions)},
        headers={"Cache-Control": cache_policy.API},
    )
