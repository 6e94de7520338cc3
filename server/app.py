"""Edge routes: ``GET|HEAD /<preset>/ab/cd/ef/<id>[.<ext>]``, signed sizes
``GET|HEAD /s/<sig>[/e<expires>]/<w>x<h>/<fit>/ab/cd/ef/<id>[.<ext>]``, and the
signed ladder URLs of private images
``GET|HEAD /s/<sig>/e<expires>/<preset>/ab/cd/ef/<id>[.<ext>]``.

A private image (every record of it private, ``server.privacy``) is refused on
its unsigned URLs (``image-private``) and served only for a valid, unexpired
signature, ``Cache-Control: private`` for no longer than the signature has left,
from storage or a render, never through or into the hot-cache tiers (their keys
are the public URLs'). A public image is served exactly as before.

Every request is checked completely (preset, id, fan-out, extension, signature,
expiry, size bounds) before any storage read or render.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from metrics.definitions import BYTES_SERVED
from metrics.hot import HotCounter
from pinhole import cache_policy
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import (
    InvalidVariantPath,
    VariantRequest,
    parse_variant_path,
    variant_key,
)
from pinhole.domain.ladder import DEFAULT_PRESETS, Format, FormatClass, Preset, formats_for
from pinhole.domain.manifest import Status
from pinhole.domain.signing import EXPIRES_PATTERN
from pinhole.errors import (
    BadRequest,
    BadSignature,
    ImageFailed,
    ImagePending,
    ImagePrivate,
    NotFound,
    PresetMismatch,
    RangeNotSatisfiable,
    SignatureExpired,
)
from pinhole.fast_routes import FAST_ROUTES_KEY, FastRoutes
from pinhole.ports import BlobStore
from pinhole.settings import Edge
from pinhole.web import pinhole_error_response
from server.entry import Entry
from server.facts import ImageFacts, ManifestFacts, PresetWatch
from server.headers import (
    etag_matches,
    if_range_allows,
    not_modified_headers,
    partial_headers,
    variant_headers,
)
from server.negotiate import accept_class
from server.privacy import Visibility
from server.purge import EdgePurger, SignedKeys
from server.ranges import Unsatisfiable, byte_range
from server.render import Renderer, RenderSpec
from server.signing import (
    FITS,
    parse_expires,
    parse_size,
    remaining_life,
    rendition_key,
    verify,
)
from server.tiers import VariantTiers


@dataclass
class EdgeState:
    tiers: VariantTiers
    store: BlobStore
    facts: ManifestFacts
    renderer: Renderer
    cfg: Edge
    # Signed renditions served here, so an image.deleted can find them.
    signed: SignedKeys
    # Which images are private; None without a record store (every image public).
    visibility: Visibility | None = None

    def purger(self) -> EdgePurger:
        return EdgePurger(self.tiers, self.facts, self.signed, lambda: self.visibility)


EDGE_KEY = web.AppKey("edge", EdgeState)

# Bound children by tier (a handful of fixed names): labels() costs a lock per hit.
_BYTES_SERVED_BY_TIER: dict[str, HotCounter] = {}


# Every format: what signed sizes are rendered in.
_ALL_FORMATS = DEFAULT_PRESETS[-1]


async def _negotiate(
    request: web.Request,
    image_id: ImageId,
    facts: ManifestFacts,
    preset: Preset,
    *,
    still: bool = False,
) -> tuple[Format, bool]:
    """The format for an extension-less URL, from ``Accept`` (the best the preset
    has: a preset without AVIF answers an AVIF browser with WebP), and ``True``:
    it was negotiated (``Vary: Accept``). Callers use an explicit extension
    without this coroutine: the edge's hottest path. ``still``: a signed size,
    never animated."""
    fmt_class = accept_class(request.headers.get("Accept"))
    if fmt_class is FormatClass.WEBP and "webp" in preset.formats:
        return Format.WEBP, True
    # The fallback depends on the image (JPEG, or PNG with alpha; GIF if animated),
    # and so does AVIF (an animated image answers animated WebP instead).
    known = await facts.get(image_id)
    if known is None:
        raise NotFound("No image with this id.")
    animated = known.animated and not still
    fmt = preset.format_for_class(fmt_class, known.has_alpha, animated)
    if fmt is None:
        raise NotFound("This preset has no format this client accepts.")
    return fmt, True


VARIANT_ROUTE = "/{preset}/{a}/{b}/{c}/{name}"
SIGNED_ROUTE = "/s/{sig}/{size}/{fit}/{a}/{b}/{c}/{name}"
# The same with an expiry inside the signed part (server/signing.py).
SIGNED_EXPIRING_ROUTE = "/s/{sig}/{expires}/{size}/{fit}/{a}/{b}/{c}/{name}"
# A ladder variant's expiring signed URL (pinhole.domain.signing.ladder_tail).
# As many segments as SIGNED_ROUTE, so it is told apart by its e<expires>
# (a size is <w>x<h>) and registered first.
SIGNED_LADDER_ROUTE = (
    "/s/{sig}/{expires:" + EXPIRES_PATTERN.replace("(", "").replace(")", "") + "}"
    "/{preset}/{a}/{b}/{c}/{name}"
)
_PRIVATE = "This image is private: its URLs need a valid, expiring signature."


def _wanted_variant(preset: str, a: str, b: str, c: str, name: str) -> VariantRequest:
    try:
        return parse_variant_path(preset, f"{a}/{b}/{c}", name)
    except InvalidVariantPath as exc:
        raise NotFound(f"No such image URL: {exc}.") from None


async def serve_variant(request: web.Request) -> web.StreamResponse:
    """``VARIANT_ROUTE`` through aiohttp's router (the fast route below serves it first)."""
    info = request.match_info
    wanted = _wanted_variant(info["preset"], info["a"], info["b"], info["c"], info["name"])
    return await _serve_variant(request, request.app[EDGE_KEY], wanted)


def _fast_variant_route(
    edge: EdgeState,
) -> tuple[
    Callable[[tuple[str, ...]], VariantRequest | None],
    Callable[[web.Request, VariantRequest], Awaitable[web.StreamResponse]],
]:
    """``VARIANT_ROUTE`` ahead of the router: a URL that does not parse is left to it."""

    def parse(segments: tuple[str, ...]) -> VariantRequest | None:
        try:
            return _wanted_variant(*segments)
        except NotFound:
            return None

    async def serve(request: web.Request, wanted: VariantRequest) -> web.StreamResponse:
        return await _serve_variant(request, edge, wanted)

    return parse, serve


async def _serve_variant(
    request: web.Request, edge: EdgeState, wanted: VariantRequest
) -> web.StreamResponse:
    visibility = edge.visibility
    if visibility is not None:
        private = visibility.cached(wanted.image_id)
        if private is None:
            private = await visibility.is_private(wanted.image_id)
        if private:
            raise ImagePrivate(_PRIVATE)
    fmt, negotiated = (
        (wanted.fmt, False)
        if wanted.fmt is not None
        else await _negotiate(request, wanted.image_id, edge.facts, wanted.preset)
    )
    key = variant_key(wanted.preset, wanted.image_id, fmt)
    entry = edge.tiers.get_l1(key)
    found = (entry, "l1") if entry is not None else await edge.tiers.get_below_l1(key)
    if found is not None:
        entry, tier = found
    else:
        rendered = await _render_missing(request, edge, wanted, fmt, key, cached=True)
        if isinstance(rendered, web.Response):
            return rendered
        entry, tier = rendered
    return _respond(request, entry, tier, fmt, wanted.image_id, negotiated)


async def _render_missing(
    request: web.Request,
    edge: EdgeState,
    wanted: VariantRequest,
    fmt: Format,
    key: str,
    *,
    cached: bool,
) -> tuple[Entry, str] | web.Response:
    """A missing ladder variant: rendered if the image is ready and the format
    is in its ladder, else the not-ready answer."""
    facts = await edge.facts.get(wanted.image_id, fresh=True)
    if facts is None or facts.status is not Status.READY:
        return _not_ready(facts)
    if fmt not in wanted.preset.formats_for(facts.has_alpha, facts.animated):
        raise NotFound("This image has no variant in that format.")
    if not edge.facts.watch.agrees(facts.manifest):
        # Its variants are another table's: a render here would mix the two.
        raise PresetMismatch()
    spec = RenderSpec.ladder(key, wanted.image_id, wanted.preset, fmt, cached=cached)
    return await edge.renderer.get(spec, facts.manifest, request=request), "render"


def _check_signature(request: web.Request, edge: EdgeState) -> int | None:
    """The signed URL's expiry in Unix seconds (``None``: it has none), once its
    signature and expiry hold; refused otherwise, before any facts, tier or render."""
    if not edge.cfg.signing_keys:
        raise NotFound("Signed URLs are not enabled here.")
    info = request.match_info
    sig = info["sig"]
    tail = request.path[len("/s/") + len(sig) :]
    if not verify(edge.cfg.signing_keys, sig, tail):
        raise BadSignature()
    if "expires" not in info:
        return None
    expires = parse_expires(info["expires"])
    if expires is None:
        raise BadRequest("The expiry must be e<unix-seconds>.")
    if remaining_life(expires, time.time(), edge.cfg.signature_skew_seconds) is None:
        raise SignatureExpired()
    return expires


async def serve_signed_ladder(request: web.Request) -> web.StreamResponse:
    """A ladder variant by its expiring signed URL: a private image's (from
    storage or a render, filling no hot-cache tier), or a public image's (through
    the tiers as its unsigned URL). ``Cache-Control: private`` either way: the
    URL was handed to one client, for a while."""
    edge = request.app[EDGE_KEY]
    expires = _check_signature(request, edge)
    assert expires is not None  # the route's pattern
    info = request.match_info
    wanted = _wanted_variant(info["preset"], info["a"], info["b"], info["c"], info["name"])
    private = edge.visibility is not None and await edge.visibility.is_private(wanted.image_id)
    fmt, negotiated = (
        (wanted.fmt, False)
        if wanted.fmt is not None
        else await _negotiate(request, wanted.image_id, edge.facts, wanted.preset)
    )
    key = variant_key(wanted.preset, wanted.image_id, fmt)
    found = await (edge.tiers.get_uncached(key) if private else edge.tiers.get(key))
    if found is None:
        rendered = await _render_missing(request, edge, wanted, fmt, key, cached=not private)
        if isinstance(rendered, web.Response):
            return rendered
        found = rendered
    response = _respond(request, *found, fmt, wanted.image_id, negotiated)
    if response.status < 400:
        # Counted from now, after any render.
        response.headers["Cache-Control"] = cache_policy.private_until(expires - time.time())
    return response


async def serve_signed(request: web.Request) -> web.StreamResponse:
    edge = request.app[EDGE_KEY]
    # An expiring URL: refused once expired, before any facts, tier or render.
    # rendition_key has no expiry in it, so a tier would serve an expired URL.
    expires = _check_signature(request, edge)
    info = request.match_info
    size = parse_size(info["size"])
    if size is None:
        raise BadRequest("The size must be <width>x<height> in pixels.")
    width, height = size
    if width > edge.cfg.max_signed_width or height > edge.cfg.max_signed_height:
        raise BadRequest(
            f"The size must be at most {edge.cfg.max_signed_width}x{edge.cfg.max_signed_height}."
        )
    fit = info["fit"]
    if fit not in FITS:
        raise BadRequest(f"fit must be one of {', '.join(FITS)}.")
    wanted = _wanted_variant("originals", info["a"], info["b"], info["c"], info["name"])
    # A private image's renditions need an expiring URL, and are rendered for
    # each request that reaches us: no hot-cache tier holds them.
    private = edge.visibility is not None and await edge.visibility.is_private(wanted.image_id)
    if private and expires is None:
        raise ImagePrivate(_PRIVATE)
    facts = await edge.facts.get(wanted.image_id)
    if facts is None or facts.status is not Status.READY:
        not_ready = _not_ready(facts)
        if expires is not None and facts is not None and facts.status is Status.PENDING:
            left = expires - time.time()
            not_ready.headers["Cache-Control"] = cache_policy.expiring_pending(left)
        return not_ready
    fmt, negotiated = (
        (wanted.fmt, False)
        if wanted.fmt is not None
        else await _negotiate(request, wanted.image_id, edge.facts, _ALL_FORMATS, still=True)
    )
    if fmt not in formats_for(facts.has_alpha):
        raise NotFound("This image has no variant in that format.")
    key = rendition_key(width, height, fit, wanted.image_id, fmt)
    found = None
    if not private:
        edge.signed.add(wanted.image_id, key)
        found = await edge.tiers.get(key, storage=False)
    if found is not None:
        entry, tier = found
    else:
        spec = RenderSpec(
            key, wanted.image_id, fmt, width, height, FITS[fit], None, False, not private
        )
        entry, tier = await edge.renderer.get(spec, facts.manifest, request=request), "render"
    response = _respond(request, entry, tier, fmt, wanted.image_id, negotiated)
    if expires is not None and response.status < 400:
        # 200, 206 and 304 alike: no cache keeps it past the URL's expiry, counted
        # from now, after any render.
        left = expires - time.time()
        response.headers["Cache-Control"] = (
            cache_policy.private_until(left) if private else cache_policy.expiring_signed(left)
        )
    return response


def _respond(
    request: web.Request, entry: Entry, tier: str, fmt: Format, image_id: ImageId, negotiated: bool
) -> web.Response:
    headers = variant_headers(entry, fmt, image_id, negotiated)
    if etag_matches(request.headers.get("If-None-Match"), entry.etag):
        return web.Response(status=304, headers=not_modified_headers(headers))
    body = entry.body
    status = 200
    range_header = request.headers.get("Range")
    if range_header is not None and if_range_allows(request.headers.get("If-Range"), entry.etag):
        try:
            span = byte_range(range_header, len(body))
        except Unsatisfiable:
            return pinhole_error_response(
                RangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(body)}"})
            )
        if span is not None:
            start, end = span
            headers = partial_headers(headers, start, end, len(body))
            body = body[start : end + 1]
            status = 206
    if request.method != "HEAD":
        counter = _BYTES_SERVED_BY_TIER.get(tier)
        if counter is None:
            counter = _BYTES_SERVED_BY_TIER[tier] = HotCounter(BYTES_SERVED.labels(tier))
        counter.inc(len(body))
    return web.Response(status=status, body=body, headers=headers)


def _not_ready(facts: ImageFacts | None) -> web.Response:
    if facts is None:
        raise NotFound("No image with this id.")
    if facts.status is Status.PENDING:
        return pinhole_error_response(ImagePending())
    failure = facts.manifest.failure
    code = failure.code if failure else "failed"
    return pinhole_error_response(ImageFailed(f"The image could not be processed ({code})."))


def edge_routes() -> list[web.RouteDef]:
    return [
        web.get(VARIANT_ROUTE, serve_variant),
        web.get(SIGNED_LADDER_ROUTE, serve_signed_ladder),
        web.get(SIGNED_ROUTE, serve_signed),
        web.get(SIGNED_EXPIRING_ROUTE, serve_signed),
    ]


def configure_edge(
    app: web.Application,
    tiers: VariantTiers,
    store: BlobStore,
    renderer: Renderer,
    cfg: Edge,
    watch: PresetWatch | None = None,
) -> None:
    edge = app[EDGE_KEY] = EdgeState(
        tiers, store, ManifestFacts(store, watch=watch), renderer, cfg, SignedKeys()
    )
    app.add_routes(edge_routes())
    fast = FastRoutes()
    fast.add(VARIANT_ROUTE, *_fast_variant_route(edge))
    app[FAST_ROUTES_KEY] = fast

    async def close_renderer(_app: web.Application) -> None:
        await renderer.close()

    app.on_cleanup.append(close_renderer)
