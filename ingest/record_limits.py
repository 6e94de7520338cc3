"""Rate limits on the record API's writes (``pinhole.rate_limits``, action
``record-writes``): ``POST /v1/records``, ``PATCH`` and ``DELETE
/v1/records/{id}``, the JSON ``PUT`` and the ``DELETE`` of an alias, and
``DELETE /v1/owners/{owner}``. Reads are not limited.

Each write counts once per bearer token, and once per owner when the request
names one: the path's owner, the JSON body's ``owner`` of ``POST /v1/records``,
or the owner of the record a ``/v1/records/{id}`` write changes (a record that
does not exist counts for the token alone, and its handler answers 404). Over a
limit: ``429 rate-limit-exceeded`` with ``Retry-After`` before the write is
made; within it, the answer carries the ``RateLimit`` headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from ingest.admission import token_subject
from pinhole.domain.record import parse_record_id, validate_owner
from pinhole.errors import PinholeError
from pinhole.ports import RecordStore
from pinhole.rate_limits import RECORD_WRITES, gate_of
from pinhole.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _valid(raw: object) -> str | None:
    try:
        return validate_owner(raw) if isinstance(raw, str) else None
    except PinholeError:
        return None


async def _owner_of(request: web.Request, records: RecordStore | None) -> str | None:
    if "owner" in request.match_info:
        return _valid(request.match_info["owner"])
    if "record_id" in request.match_info and records is not None:
        try:
            return (await records.get(parse_record_id(request.match_info["record_id"]))).owner
        except PinholeError:  # no such record, or a bad id: the handler answers
            return None
    if request.content_type == "application/json":
        # aiohttp keeps the body it read, so the handler reads it again for free.
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None
        return _valid(body.get("owner")) if isinstance(body, dict) else None
    return None


async def limit_record_write(
    request: web.Request, settings: Settings, records: RecordStore | None = None
) -> dict[str, str]:
    """Count one record write; ``RateLimitExceeded`` over a limit, else the
    ``RateLimit`` headers for its answer."""
    gate = gate_of(request)
    if gate is None or not gate.enforces(RECORD_WRITES):
        return {}
    return await gate.check(
        RECORD_WRITES,
        token=token_subject(request, settings.auth),
        owner=await _owner_of(request, records),
    )


def limited_writes(settings: Settings, records: RecordStore, handler: Handler) -> Handler:
    async def limited(request: web.Request) -> web.Response:
        headers = await limit_record_write(request, settings, records)
        response = await handler(request)
        response.headers.update(headers)
        return response

    return limited
