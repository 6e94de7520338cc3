"""HTTP plumbing shared by the ingest and edge apps: JSON errors, health routes.

Every error leaves as ``{"error": {"code", "message"}}`` with ``no-store``; an
unexpected exception is logged with its traceback and the client gets only a
generic ``internal-error``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from metrics.labels import ERROR_CODE_KEY
from pinhole import cache_policy
from pinhole.errors import (
    InternalError,
    PinholeError,
    ServiceUnavailable,
    TransientError,
    for_status,
)

log = logging.getLogger("pinhole.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadinessCheck = Callable[[], Awaitable[None]]


# Which role an app is ("ingest", "edge", ...): its metrics label, read by the runner.
SERVICE_KEY = web.AppKey("service", str)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    cache_control: str = cache_policy.ERROR,
    headers: dict[str, str] | None = None,
) -> web.Response:
    out = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    out.update(headers or {})
    response = web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=out
    )
    response[ERROR_CODE_KEY] = code
    return response


def pinhole_error_response(exc: PinholeError) -> web.Response:
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        retry_after=exc.retry_after,
        cache_control=exc.cache_control,
        headers=exc.headers,
    )


def response_for_exception(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error for what a handler raised (an ``HTTPException`` of 400 or more,
    or anything else). A bug is logged with its traceback; the client gets
    ``internal-error`` only."""
    if isinstance(exc, PinholeError):
        return pinhole_error_response(exc)
    if isinstance(exc, TransientError):
        log.warning("dependency unavailable", extra={"path": request.path, "error": str(exc)})
        return pinhole_error_response(ServiceUnavailable())
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {}
        if exc.status == 405 and "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        error = for_status(exc.status)(exc.reason, headers=headers)
        # aiohttp's status, even where the catalogue has no class of its own for it.
        return error_response(exc.status, error.code, error.message, headers=error.headers)
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"path": request.path, "method": request.method},
    )
    return pinhole_error_response(InternalError())


@dataclass(frozen=True)
class Dependency:
    """What ``/readyz`` asks about. A ``required`` one that fails makes the role
    unready (503); any other only degrades it (200, and the body says so): an
    edge that cannot reach storage still serves what its caches hold, and taking
    it out of rotation would take that dark too."""

    name: str
    check: ReadinessCheck
    required: bool = True


async def _probe(dependency: Dependency, timeout_seconds: float) -> str:
    failed = "unavailable" if dependency.required else "degraded"
    try:
        async with asyncio.timeout(timeout_seconds):
            await dependency.check()
    except TimeoutError:
        return f"{failed}: no answer in {timeout_seconds:g}s"
    except Exception as exc:  # any failure means not ready; say which
        return f"{failed}: {type(exc).__name__}"
    return "ok"


def health_routes(
    dependencies: Iterable[Dependency],
    *,
    timeout_seconds: float = 0.8,
    details: Callable[[], Mapping[str, object]] | None = None,
) -> list[web.RouteDef]:
    """``/healthz`` says the process is alive; ``/readyz`` asks every dependency,
    all at once and each for at most ``timeout_seconds`` (the default is that of
    ``Settings.readiness_timeout_seconds``), so it answers within about a second
    whatever hangs, and names each dependency's state: ``ok``, ``unavailable: ...``
    (a required one) or ``degraded: ...`` (one the role can serve without).
    ``details`` adds keys of its own to the body (the role's preset table)."""
    named = list(dependencies)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers={"Cache-Control": cache_policy.ERROR})

    async def readyz(_request: web.Request) -> web.Response:
        answers = await asyncio.gather(*(_probe(d, timeout_seconds) for d in named))
        pairs = list(zip(named, answers, strict=True))
        unready = any(d.required and answer != "ok" for d, answer in pairs)
        degraded = any(answer != "ok" for answer in answers)
        status = "unavailable" if unready else "degraded" if degraded else "ok"
        return web.json_response(
            {
                "status": status,
                "checks": {d.name: answer for d, answer in pairs},
                **(details() if details is not None else {}),
            },
            status=503 if unready else 200,
            headers={"Cache-Control": cache_policy.ERROR},
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
