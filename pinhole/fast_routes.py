"""GET/HEAD routes matched ahead of aiohttp's router, for the edge's hot URLs.

aiohttp's application layer (walking the path's prefixes through the route
index, a regex, a match-info object, the app stack) cost about 5 µs of the
~40 µs of Python an edge L1 hit took (bench/edge, server CPU per request).
``FastRoutes`` matches a few templates with one compiled regex each, lets the
route parse the segments, and calls it directly.

The same templates stay registered in the app's router, with handlers that
share the route's code: other methods still get 405, the app also works under
a plain ``AppRunner``, and a path a fast route declines (its ``parse`` returns
``None``) falls through to the router, which then decides as it always would.
So a fast route only ever takes a request the router would have given it;
``tests/unit/test_fast_routes.py`` checks that for the apps Pinhole builds.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from metrics.labels import ROUTE_KEY
from pinhole.web import Handler

_PLAIN_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GET_HEAD = frozenset({"GET", "HEAD"})

P = TypeVar("P")


def template_pattern(template: str) -> re.Pattern[str]:
    """The regex aiohttp uses for a template of plain ``{name}`` segments: each is ``[^{}/]+``."""
    parts = _PLAIN_SEGMENT.split(template)
    literal, names = parts[0::2], parts[1::2]
    if any("{" in text or "}" in text for text in literal):
        raise ValueError(f"only plain {{name}} segments are supported: {template}")
    regex = "".join(
        re.escape(text) + ("([^{}/]+)" if i < len(names) else "") for i, text in enumerate(literal)
    )
    return re.compile(regex)


@dataclass(frozen=True, slots=True)
class FastRoute:
    pattern: re.Pattern[str]
    template: str
    parse: Callable[[tuple[str, ...]], Any]
    serve: Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


class FastRoutes:
    def __init__(self) -> None:
        self._routes: list[FastRoute] = []

    def add(
        self,
        template: str,
        parse: Callable[[tuple[str, ...]], P | None],
        serve: Callable[[web.Request, P], Awaitable[web.StreamResponse]],
    ) -> None:
        """``parse`` gets the segments in template order; ``None`` leaves it to the router."""
        self._routes.append(FastRoute(template_pattern(template), template, parse, serve))

    def templates(self) -> list[str]:
        return [route.template for route in self._routes]

    def match(self, method: str, path: str) -> tuple[FastRoute, Any] | None:
        """The route that takes this request and what it parsed, or ``None`` for the router."""
        if method in _GET_HEAD:
            for route in self._routes:
                found = route.pattern.fullmatch(path)
                if found is not None:
                    parsed = route.parse(found.groups())
                    if parsed is not None:
                        return route, parsed
        return None

    def around(self, fallback: Handler) -> Handler:
        """A handler that tries the fast routes, then ``fallback`` (the app's own handling)."""
        match = self.match

        async def dispatch(request: web.Request) -> web.StreamResponse:
            # What aiohttp's router matches: decoded, except %2F and %25 (so an
            # encoded slash never splits a segment).
            found = match(request.method, request.rel_url.path_safe)
            if found is None:
                return await fallback(request)
            route, parsed = found
            request[ROUTE_KEY] = route.template
            return await route.serve(request, parsed)

        return dispatch


FAST_ROUTES_KEY = web.AppKey("fast_routes", FastRoutes)
