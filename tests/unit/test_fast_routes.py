"""Fast routes take only requests aiohttp's router would give the same route."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.labels import ROUTE_KEY
from pinhole.app.runtime import build_edge_app, build_up_app
from pinhole.fast_routes import FAST_ROUTES_KEY, FastRoutes, template_pattern
from pinhole.settings import Settings

ID = "dfded25df13f5c2dfee68cafb23f69c3"
TAKEN = [
    f"/236x/df/de/d2/{ID}",
    f"/736x/df/de/d2/{ID}.jpg",
    f"/originals/df/de/d2/{ID}.avif",
    f"/236x/df/de/d2/{ID}%2Ejpg",  # aiohttp decodes it, so it is the .jpg URL
    f"/474x/df/de/d2/{ID}.gif",  # an animated image's fallback (a still's answers 404)
]
PATHS = [
    *TAKEN,
    f"/236x/df/de/d2/{ID}.bmp",  # unknown extension
    f"/237x/df/de/d2/{ID}.jpg",  # unknown preset
    f"/236x/00/00/00/{ID}.jpg",  # fan-out that disagrees with the id
    f"/236x/df/de/d2/{ID.upper()}.jpg",
    f"/236x/df/de/d2/{ID}.jpg/extra",
    f"/236x/df/de/{ID}.jpg",
    f"/236x/df/de/d2%2F{ID}.jpg",
    "/236x/df/de/d2/{x}",
    "/static/app.js",
    "/static/a/b/c/d",
    f"/v1/images/{ID}",
    f"/s/sig/100x100/fit/df/de/d2/{ID}.jpg",
    "/healthz",
    "/",
    "//236x/df/de/d2/x",
]


def test_template_pattern_is_aiohttp_s_segment_rule() -> None:
    template = "/{preset}/{a}/{b}/{c}/{name}"
    pattern = template_pattern(template)
    resource = web.DynamicResource(template)
    for path in [*PATHS, "/a/b/c/d/e", "/a/b/c/d/", "/a//c/d/e", "/a/b/c/d/e.f.g"]:
        ours = pattern.fullmatch(path)
        theirs = resource._match(path)
        assert (ours is None) == (theirs is None), path
        if ours is not None and theirs is not None:
            assert list(ours.groups()) == list(theirs.values()), path


def test_only_plain_segments() -> None:
    with pytest.raises(ValueError, match="only plain"):
        template_pattern("/{name:[a-z]+}/x")


@pytest.mark.parametrize("build", [build_edge_app, build_up_app])
async def test_a_fast_route_agrees_with_the_router(build: object, tmp_path: Path) -> None:
    settings = Settings(storage=f"file://{tmp_path}", queue="memory://", cache="memory://")
    app: web.Application = build(settings)  # type: ignore[operator]
    fast = app[FAST_ROUTES_KEY]
    assert fast.templates() == ["/{preset}/{a}/{b}/{c}/{name}"]
    taken: list[str] = []
    for path in PATHS:
        for method in ("GET", "HEAD", "POST", "DELETE"):
            request = make_mocked_request(method, path, app=app)
            found = fast.match(request.method, request.rel_url.path_safe)  # as around() does
            if found is not None:
                taken.append(f"{method} {path}")
                match = await app.router.resolve(request)
                assert match.http_exception is None, path
                assert match.route.resource is not None
                assert match.route.resource.canonical == found[0].template, path
    # The ladder URLs (negotiated and explicit) are taken; nothing else is.
    assert sorted(taken) == sorted(f"{m} {p}" for m in ("GET", "HEAD") for p in TAKEN)


async def test_a_declined_path_falls_through() -> None:
    fast = FastRoutes()
    served: list[str] = []

    async def serve(_request: web.Request, parsed: str) -> web.StreamResponse:
        served.append(parsed)
        return web.Response(text=parsed)

    def parse(segments: tuple[str, ...]) -> str | None:
        return segments[1] if segments[0] == "img" else None

    fast.add("/{kind}/{name}", parse, serve)

    async def router(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="router")

    handle = fast.around(router)
    request = make_mocked_request("GET", "/img/cat")
    ok = await handle(request)
    assert isinstance(ok, web.Response)
    assert ok.text == "cat"
    assert request[ROUTE_KEY] == "/{kind}/{name}"  # the metrics' route label
    other = await handle(make_mocked_request("GET", "/doc/cat"))
    assert isinstance(other, web.Response)
    assert other.text == "router"
    post = await handle(make_mocked_request("POST", "/img/cat"))
    assert isinstance(post, web.Response)
    assert post.text == "router"
    assert served == ["cat"]


def _mutate(path: str, how: str, at: int) -> str:
    """One URL-level change to a valid variant path."""
    slashes = [i for i, ch in enumerate(path) if ch == "/"]
    i = slashes[at % len(slashes)]
    return {
        "encode-slash": path[:i] + "%2F" + path[i + 1 :],
        "encode-dot": path.replace(".", "%2E"),
        "encode-percent": path[:i] + "/%25" + path[i + 1 :],
        "double-slash": path[:i] + "/" + path[i:],
        "drop-segment": path[:i]
        + path[path.find("/", i + 1) if "/" in path[i + 1 :] else len(path) :],
        "extra-segment": path + "/x",
        "trailing-slash": path + "/",
        "dot-segment": path[:i] + "/." + path[i:],
        "upper": path.upper(),
        "brace": path[:i] + "/{x}" + path[i:],
    }[how]


MUTATIONS = st.sampled_from(
    [
        "encode-slash",
        "encode-dot",
        "encode-percent",
        "double-slash",
        "drop-segment",
        "extra-segment",
        "trailing-slash",
        "dot-segment",
        "upper",
        "brace",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(TAKEN[:3]),
    mutations=st.lists(st.tuples(MUTATIONS, st.integers(0, 8)), max_size=3),
    method=st.sampled_from(["GET", "HEAD"]),
)
async def test_any_path_the_fast_route_takes_resolves_to_it(
    start: str,
    mutations: list[tuple[str, int]],
    method: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = start
    for how, at in mutations:
        path = _mutate(path, how, at)
    app = _edge_app(tmp_path_factory)
    request = make_mocked_request(method, path, app=app)
    found = app[FAST_ROUTES_KEY].match(request.method, request.rel_url.path_safe)
    if found is not None:
        match = await app.router.resolve(request)
        assert match.http_exception is None, path
        assert match.route.resource is not None
        assert match.route.resource.canonical == found[0].template


_APPS: list[web.Application] = []


def _edge_app(tmp_path_factory: pytest.TempPathFactory) -> web.Application:
    if not _APPS:
        root = tmp_path_factory.mktemp("fast-routes")
        _APPS.append(
            build_edge_app(Settings(storage=f"file://{root}", queue="memory://", cache="memory://"))
        )
    return _APPS[0]
