"""The one typed settings object.

Sources, strongest first: init kwargs, ``PINHOLE_*`` environment variables
(nested with ``__``, e.g. ``PINHOLE_LIMITS__MAX_PIXELS``), a TOML file named by
``PINHOLE_CONFIG``, then the defaults below. Backends are chosen by URL so that
moving from one machine to clusters is a configuration change, not a code change.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pinhole.domain.ladder import (
    DEFAULT_PRESETS,
    FORMAT_NAMES,
    PRESET_NAME,
    RESERVED_NAMES,
    Preset,
    PresetTable,
)
from pinhole.events import IMAGE_DELETED, IMAGE_FAILED, IMAGE_READY
from pinhole.sharding import DEFAULT_STORE, parse_ranges


class Limits(BaseModel):
    """Bounds enforced before the expensive step each one guards."""

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=50_000_000, gt=0)
    max_width: int = Field(default=16_384, gt=0)
    max_height: int = Field(default=16_384, gt=0)
    max_frames: int = Field(default=1_000, gt=0)
    # An animation's pixels over all its frames (frames x logical screen), the
    # budget Cloudflare Images sets: each frame is decoded onto the full screen.
    max_animation_pixels: int = Field(default=50_000_000, gt=0)
    # EXIF, ICC, XMP and text blocks a header parse would load into memory.
    max_metadata_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Whole upload body, and the longest silence between two of its chunks (slow-loris).
    request_timeout_seconds: float = Field(default=60.0, gt=0)
    read_idle_timeout_seconds: float = Field(default=15.0, gt=0)
    # Every HTTP role: from a request's first byte to the end of its headers
    # (slow-loris on headers), and how long an idle keep-alive connection is kept.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    keepalive_timeout_seconds: float = Field(default=75.0, gt=0)
    # Uploads in progress per process; beyond it, 429 rate-limited with Retry-After.
    max_concurrent_uploads: int = Field(default=32, gt=0)


class Transcode(BaseModel):
    """Encoder choices. Defaults keep a 2560x1600 ladder near a second on one core."""

    # "pillow" renders on Pillow-SIMD; it has no AVIF encoder, so AVIF is
    # encoded by libvips from Pillow's resized pixels.
    engine: Literal["vips", "pillow"] = "vips"
    jpeg_quality: int = Field(default=80, ge=1, le=100)
    # Chosen by measurement (bench/transcode, README "Benchmarks"): WebP effort 4
    # matters for small outputs (SSIM) and costs little there, while outputs from
    # 1200 px wide take most of the time and lose almost nothing at effort 2;
    # AVIF effort 1 is 3x faster than 2 for about 2% more bytes.
    webp_quality: int = Field(default=78, ge=1, le=100)
    avif_quality: int = Field(default=52, ge=1, le=100)
    avif_effort: int = Field(default=1, ge=0, le=9)
    webp_effort: int = Field(default=4, ge=0, le=6)
    # WebP effort for outputs at least 1200 px wide (the 1200x and originals presets).
    webp_large_effort: int = Field(default=2, ge=0, le=6)
    # cgif's effort for animated GIF variants. Measured on a 300-frame panning
    # photo at 474 px: effort 1 encodes in 15 s against 49 s at cgif's default 7,
    # for 1% more bytes and a mean pixel error of 0.68 against 0.51 (of 255).
    gif_effort: int = Field(default=1, ge=1, le=10)
    # Encodes at once, per worker, and libvips threads per operation. Measured on
    # 2 cores (bench/transcode, three runs): cores + 1 encode threads beat cores
    # and cores + 2, and libvips' own default of one thread per core per
    # operation beat one thread per operation by about 10%.
    render_threads: int = Field(default_factory=lambda: (os.cpu_count() or 1) + 1, gt=0)
    # Also what the edge renders with: libaom's AVIF bytes differ between one
    # thread and several, so every process that renders (transcoders, edges)
    # should agree on it, or a variant's bytes depend on who rendered it.
    vips_threads_per_op: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    # Jobs consumed and rendered at once by one worker; each holds one decoded original.
    max_in_flight: int = Field(default=2, gt=0)
    # Variants the transcoder leaves to the edge, which renders them on first
    # request ("<preset>.<format>", e.g. "originals.avif"). Manifests still list
    # their URLs (without bytes). Empty by default: see README, Benchmarks.
    lazy_variants: list[str] = Field(default_factory=list)
    # Above this many source pixels the transcoder streams: presets come from one
    # shrink-on-load decode, the originals fallback is encoded while decoding, and
    # originals WebP/AVIF (whose encoders need the whole picture in memory) are lazy.
    stream_above_pixels: int = Field(default=24_000_000, gt=0)


class Kafka(BaseModel):
    """Topic names and producer options for the ``kafka://`` queue."""

    jobs_topic: str = "pinhole.jobs"
    events_topic: str = "pinhole.events"
    dead_letter_topic: str = "pinhole.jobs.dlq"
    # Webhook deliveries given up on, with the reason (pinhole webhooks).
    webhook_dead_letter_topic: str = "pinhole.webhooks.dlq"
    consumer_group: str = "pinhole-transcoder"
    partitions: int = Field(default=12, gt=0)
    # Real Kafka supports it; the tansu test broker does not.
    idempotent_producer: bool = False
    # How long a vanished consumer holds its partitions (real Kafka's floor is 6 s).
    session_timeout_ms: int = Field(default=10_000, gt=0)
    # Longer than the slowest allowed job (a 50 MP original), or the member is evicted.
    max_poll_interval_ms: int = Field(default=600_000, gt=0)


class Cache(BaseModel):
    """Hot-cache tier bounds: L1 is per process, L2 is the shared cache URL."""

    l1_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    max_object_bytes: int = Field(default=1024 * 1024, gt=0)
    ttl_seconds: int = Field(default=24 * 3600, gt=0)
    timeout_seconds: float = Field(default=0.25, gt=0)
    # A delete that could not reach Redis leaves a purge marker (purge/ in
    # storage); every edge retries those this often. A Redis that comes back
    # with its data may serve the deleted variants until the next retry.
    purge_retry_seconds: float = Field(default=10.0, gt=0)


class Reconcile(BaseModel):
    """The periodic reconcile every transcoder (and ``pinhole up``) runs, so that
    pending work heals without an operator. Its threshold is
    ``reconcile_after_seconds``; a requeued image's clock restarts, so an image
    gets at most one extra job per threshold however many transcoders run."""

    # A pass lists the pending index (about one request per 1,000 pending
    # uploads) and reads each pending manifest: cheap enough every minute from
    # every transcoder, and with the 300 s threshold an image whose job was lost
    # is queued again within about six minutes.
    interval_seconds: float = Field(default=60.0, gt=0)
    # Each wait is interval x a random factor in [1 - jitter, 1 + jitter], so
    # transcoders started together (a deploy) do not list and publish in step.
    jitter: float = Field(default=0.5, ge=0, lt=1)
    # Publishing a job retries transient broker errors (aiokafka's UnknownError
    # or UnknownTopicOrPartition from a broker that just restarted, a refused
    # connection) with capped backoff (0.5 s doubling, capped at 10 s, full
    # jitter), up to this many attempts: at most about 45 s of waiting, so
    # ``pinhole reconcile`` rides out a broker restart yet still exits when the
    # broker stays down (the periodic pass just tries again next time).
    publish_attempts: int = Field(default=8, gt=0)


class S3(BaseModel):
    """Bounds on every S3 (or MinIO) request, so a store that hangs costs a request
    a few seconds and a 503 with Retry-After, not botocore's patience: a
    black-holed store held uploads, status reads and edge misses 42-46 s (a 10 s
    read timeout times 3 attempts) before these bounds (issue #20)."""

    # A TCP connect to the store. On its own network it takes well under 10 ms
    # (moto on loopback: under 1 ms); a host that drops SYNs costs this much.
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    # The longest silence while waiting for an answer's bytes. A healthy store
    # answers a small request in milliseconds (moto here: 7 ms median, 10 ms
    # max of 40 puts and gets; AWS quotes 100-200 ms to first byte), so 2 s is
    # spent only on a store that has stopped. It counts silence, not transfer
    # time: a 30 MB put sent at 4 MB/s (8.5 s) completes under it.
    read_timeout_seconds: float = Field(default=2.0, gt=0)
    # botocore's attempts per request (its "standard" retries, with backoff):
    # a dropped connection or a throttle answer is retried before it fails.
    attempts: int = Field(default=3, gt=0)
    # One whole operation (every attempt, and the bucket check of the first),
    # for small objects: manifests, markers, variants, heads, pings. Two read
    # timeouts and their backoff fit; a hung store fails a request in this long.
    timeout_seconds: float = Field(default=5.0, gt=0)
    # Large bodies (originals up to limits.max_upload_bytes, both ways) get
    # timeout_seconds plus their size at this rate: a 16 Mbit/s floor that any
    # S3 region or LAN MinIO clears many times over (tens of MB/s per stream),
    # so the default 50 MiB upload has 30 s, under a load balancer's usual 60 s.
    min_bytes_per_second: int = Field(default=2 * 1024 * 1024, gt=0)

    def transfer_seconds(self, size: int) -> float:
        """The deadline of an operation that moves ``size`` bytes."""
        return self.timeout_seconds + size / self.min_bytes_per_second


class Auth(BaseModel):
    """Bearer tokens, stored as SHA-256 hex digests so the config holds no secret."""

    token_sha256: list[str] = Field(default_factory=list)
    # Only for `pinhole up` on a laptop: uploads and deletes need no token.
    allow_anonymous: bool = False


class Edge(BaseModel):
    """Edge server: signed arbitrary sizes and on-the-fly renders of missing variants."""

    # HMAC-SHA256 keys for signed URLs; the first signs, any verifies (rotation).
    # Empty: signed URLs are disabled (404).
    signing_keys: list[str] = Field(default_factory=list)
    max_signed_width: int = Field(default=4096, gt=0)
    max_signed_height: int = Field(default=4096, gt=0)
    # An expiring signed URL is still accepted this long past its expiry: the
    # clocks of whoever signs it and of each edge differ by a few seconds even
    # under NTP, and a URL issued just before it expires is still in flight. 30 s
    # covers both while adding little to a URL's life (its Cache-Control never
    # goes past the expiry itself).
    signature_skew_seconds: int = Field(default=30, ge=0)
    # Renders at once per process, on a bounded thread pool (libvips drops the GIL).
    max_concurrent_renders: int = Field(default=2, gt=0)
    # Originals larger than this are never rendered on the fly.
    max_render_source_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Cross-process render lock in the shared cache (Redis SET NX PX + polling).
    render_lock_ms: int = Field(default=30_000, gt=0)
    render_wait_seconds: float = Field(default=30.0, gt=0)
    # How long an edge process trusts what it last learned of an image's
    # visibility (public, or private: every record of it private) before asking
    # the record store again. An ``image.visibility`` event makes every edge
    # forget it at once; this bounds an event that was lost or late, and is how
    # long `pinhole cdn-purge` waits before purging such an image a second time
    # (server.privacy, README "Private records").
    visibility_ttl_seconds: float = Field(default=30.0, gt=0)


class UploadUrls(BaseModel):
    """One-time upload URLs (``POST /v1/upload-urls``, ``ingest.upload_urls``): a
    browser uploads with one of them and no other credential."""

    # HMAC-SHA256 keys the URLs' tokens are signed with; the first signs, any
    # verifies (rotation: put the new key first, drop the old one once the
    # longest-lived URL signed with it has expired). Every ingest process needs
    # the same keys. Empty: upload URLs are disabled (404 upload-urls-disabled).
    signing_keys: list[str] = Field(default_factory=list)
    # Cloudflare's direct creator uploads default to 30 minutes and allow up to
    # 6 hours: long enough for a form left open, short enough that a leaked
    # URL is soon worthless.
    default_expires_seconds: int = Field(default=1800, gt=0)
    max_expires_seconds: int = Field(default=21_600, gt=0)
    # Origins whose pages may upload with a URL from the browser (exact
    # ``scheme://host[:port]``); CORS is answered for these only, on the upload
    # route only. Empty: no cross-origin browser uploads.
    cors_origins: list[str] = Field(default_factory=list)
    # How long a browser may cache a preflight's answer (Chromium caps it at 2 h).
    cors_max_age_seconds: int = Field(default=600, ge=0)
    # Claims of used URLs are kept until their URL has expired (after that the
    # expiry alone refuses it), then removed by every ingest process this often.
    claim_sweep_interval_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> UploadUrls:
        if self.default_expires_seconds > self.max_expires_seconds:
            raise ValueError("default_expires_seconds exceeds max_expires_seconds")
        for origin in self.cors_origins:
            # Browsers send Origin as exactly scheme://host[:port], lower case.
            scheme, sep, netloc = origin.partition("://")
            if (
                scheme not in ("http", "https")
                or not sep
                or not netloc
                or origin != origin.lower()
                or any(c in netloc for c in "/?#@ ")
            ):
                raise ValueError(f"a CORS origin is scheme://host[:port] exactly, not {origin!r}")
        return self


class UrlFetch(BaseModel):
    """Upload by URL (``POST /v1/images`` with ``{"url": ...}``, ``ingest.fetch``):
    what a server-side fetch may reach, and how long it may take. The size cap is
    ``limits.max_upload_bytes``, as for an upload."""

    # Host names a fetch may reach (exact, or "*.example.com" for its
    # subdomains); every address is checked all the same. Empty: any host whose
    # addresses are all public.
    allow_hosts: list[str] = Field(default_factory=list)
    # FOR TESTS ONLY: lets a fetch reach 127.0.0.0/8 and ::1 (a test's server on
    # loopback). Never in production: loopback is where admin ports and sidecars
    # listen.
    allow_loopback: bool = False
    # A TCP (and TLS) connect; a public image host answers in well under a second.
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # The longest silence between two chunks of the response (slow-loris).
    read_idle_timeout_seconds: float = Field(default=10.0, gt=0)
    # The whole fetch, redirects included: a 50 MiB image at 16 Mbit/s fits.
    total_timeout_seconds: float = Field(default=30.0, gt=0)
    # Redirects followed, each checked like the first URL (the bound).
    max_redirects: int = Field(default=3, ge=0, le=3)


class Sharding(BaseModel):
    """Storage shards: which store holds each virtual shard (the id's first 3 hex chars).

    ``storage`` is the store named "default"; ``stores`` names the others by URL.
    ``map`` gives shard ranges to stores (``{"800-fff": "b"}``); shards it does not
    list live on "default". The map only seeds the live map: once ``pinhole migrate``
    has run, the control document in the default store is what every process
    follows (README "Sharding and migrations")."""

    stores: dict[str, str] = Field(default_factory=dict)
    map: dict[str, str] = Field(default_factory=dict)
    # How often each process rereads the live shard map; a migration waits two
    # of these (plus the grace) between phases so every process has followed.
    refresh_seconds: float = Field(default=5.0, gt=0)
    grace_seconds: float = Field(default=1.0, ge=0)
    # One migration at a time: a migration that stops renewing its lease for
    # this long (a crash on another host, a stall) can be taken over.
    lease_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Sharding:
        if DEFAULT_STORE in self.stores:
            raise ValueError(
                f"the store named {DEFAULT_STORE!r} is PINHOLE_STORAGE; name the others"
            )
        parse_ranges(self.map, self.stores)
        return self


class RecordShards(BaseModel):
    """Record store shard servers: which server holds each virtual shard of records
    (``pinhole.domain.record``: a record id carries its shard, an owner's shard is
    a hash of the name). Like ``Sharding`` for blobs: ``records`` is the server
    named "default", ``servers`` names the others by URL
    (``mysql://user:password@host:3306/pinhole``), and ``map`` gives shard ranges
    to servers (``{"800-fff": "b"}``); unlisted shards live on "default". The map
    only seeds the live map: once ``pinhole db migrate`` has run, the control
    document on "default" is what every process follows."""

    servers: dict[str, str] = Field(default_factory=dict)
    map: dict[str, str] = Field(default_factory=dict)
    # A TCP connect to a shard server; a server that is down refuses at once, a
    # host that is gone drops the SYN, and this is what that costs a request.
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    # One whole call (pool wait, connect, statements, commit). A shard server
    # that is down or hung costs a request about this, then 503 for that shard
    # only; the slowest call, a 1000-record page, takes milliseconds.
    timeout_seconds: float = Field(default=2.0, gt=0)
    # Connections per process to each shard server. Calls take milliseconds, so
    # ten serve thousands a second; keep processes x this below the server's
    # max_connections (MariaDB's default is 151).
    max_connections: int = Field(default=10, gt=0)
    # The live map (a control document on "default", written by `pinhole db
    # migrate`) is reread this often by every process; a move waits two of these
    # plus the grace between phases, so every process has followed. One reread
    # is one primary-key read on "default" per process per interval.
    refresh_seconds: float = Field(default=5.0, gt=0)
    grace_seconds: float = Field(default=1.0, ge=0)
    # One `pinhole db migrate` at a time: one that stops renewing its lease for
    # this long (a crash on another host, a stall) can be taken over.
    lease_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RecordShards:
        if DEFAULT_STORE in self.servers:
            raise ValueError(
                f"the server named {DEFAULT_STORE!r} is PINHOLE_RECORDS; name the others"
            )
        parse_ranges(self.map, self.servers)
        return self


class Records(BaseModel):
    """What the record API does around the store (``ingest.records``, ``ingest.sweep``)."""

    # An image whose last record went is deleted this long after (its blobs, its
    # caches, the CDN). An undo window for a mistaken delete; and it must dwarf
    # the few seconds an upload takes between checking for a pending sweep and
    # writing its record, which is what keeps a re-upload of the same bytes safe
    # without a lock on every upload.
    sweep_grace_seconds: float = Field(default=3600.0, ge=1.0)
    # How often every ingest process looks for images due for deletion.
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    # Listings: the page size when the client names none, and the most it may ask.
    page_size: int = Field(default=50, ge=1, le=1000)
    # DELETE /v1/owners/{owner} removes records for at most this long per
    # request, then answers how many went and whether any are left.
    owner_delete_seconds: float = Field(default=5.0, gt=0)
    # The life of the signed, expiring URLs the record and manifest APIs hand
    # out for a private image (rounded up to a tenth of it, so answers within
    # that step name the same URLs: pinhole.domain.signing.expiry_for).
    private_url_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)


class WebhookEndpoint(BaseModel):
    """One endpoint ``pinhole webhooks`` POSTs events to, signed as the Standard
    Webhooks specification says."""

    url: str
    # ``whsec_`` and the base64 of the HMAC key, as the specification writes it.
    secret: str
    events: list[str] = Field(default_factory=lambda: [IMAGE_READY, IMAGE_FAILED, IMAGE_DELETED])

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook URL must be http(s)://host/..., not {url!r}")
        return url

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: str) -> str:
        if not secret.startswith("whsec_"):
            raise ValueError("a webhook secret is whsec_ followed by base64")
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ValueError("a webhook secret is whsec_ followed by base64") from None
        if len(key) < 24:
            raise ValueError("a webhook secret needs at least 24 bytes of key")
        return secret


class Webhooks(BaseModel):
    """``pinhole webhooks``: every event on the events topic to every endpoint,
    each endpoint in a consumer group of its own (one that is down delays only
    itself), in order per image, at least once."""

    endpoints: dict[str, WebhookEndpoint] = Field(default_factory=dict)
    # One POST; an endpoint slower than this is a failed attempt.
    timeout_seconds: float = Field(default=10.0, gt=0)
    # The waits before each retry after the first attempt: the Standard Webhooks
    # example schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 27 hours),
    # then the delivery is dead-lettered with its reason.
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    # For tests only: endpoints on loopback (refused by default, like every
    # private, link-local and internal address).
    allow_loopback: bool = False

    @field_validator("endpoints")
    @classmethod
    def _names(cls, endpoints: dict[str, WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
        for name in endpoints:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name):
                raise ValueError(f"webhook endpoint names are a-z, 0-9 and -: {name!r}")
        return endpoints

    @property
    def configured(self) -> bool:
        return bool(self.endpoints)


class CdnPurge(BaseModel):
    """CDN caches ``pinhole cdn-purge`` purges for every deleted image, set up as
    in cdn_config/: varnish by surrogate key, nginx (ngx_cache_purge) by URL."""

    varnish_urls: list[str] = Field(default_factory=list)
    nginx_urls: list[str] = Field(default_factory=list)
    # One purge request; a cache that does not answer in time is retried.
    timeout_seconds: float = Field(default=5.0, gt=0)
    # Tries per cache and image (jittered exponential backoff capped at 30 s:
    # about a minute for the default, two at most) before a cache is given up
    # on for that image, so one cache down for long does not hold every later
    # delete back.
    attempts: int = Field(default=10, gt=0)
    # nginx purge requests in flight per cache (one per URL and Accept class).
    concurrency: int = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _http_urls(self) -> CdnPurge:
        for url in (*self.varnish_urls, *self.nginx_urls):
            scheme, sep, rest = url.partition("://")
            if scheme not in ("http", "https") or not sep or not rest.strip("/"):
                raise ValueError(f"a CDN cache URL must be http(s)://host[:port], not {url!r}")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.varnish_urls or self.nginx_urls)


class RateLimits(BaseModel):
    """Requests per client in each window, counted in the shared cache
    (``PINHOLE_CACHE``: Redis, so every process counts together; the in-process
    counters of ``memory://`` for ``pinhole up``). ``pinhole.rate_limits``
    enforces them: ``429 rate-limit-exceeded`` with ``Retry-After`` and the
    ``RateLimit`` headers. 0 turns a limit off. A Redis that is down or slow
    lets requests through (counted, logged): a limiter never turns an outage
    into refusals. Each default sits far above what one person or app does and
    well below what a runaway script does to one ingest process, which takes
    about 33 uploads/s of ~500 KB photos and 190/s of small ones (README,
    Benchmarks); the test suite, which sends everything from 127.0.0.1, never
    comes near them."""

    # A window opens with a subject's first request; its count restarts when it ends.
    window_seconds: int = Field(default=60, gt=0)
    # A token is an app's backend, uploading for all its users: 100/s sustained,
    # three times what one ingest process takes of ~500 KB photos.
    uploads_per_token: int = Field(default=6000, ge=0)
    # An owner is one user: a 600-photo album in a minute, from every device.
    uploads_per_owner: int = Field(default=600, ge=0)
    # Uploads with no bearer token (upload URLs, ``pinhole up``'s dev mode), per
    # client address: the address is all that names who sends them. 10/s leaves
    # room for an office or a carrier-grade NAT behind one address. Uploads with
    # a token count per token instead: the app's backend uploads for everyone
    # from one address, and the token names it better.
    uploads_per_address: int = Field(default=600, ge=0)
    # Each upload URL is one upload, so the same as the uploads they make.
    upload_urls_per_token: int = Field(default=6000, ge=0)
    upload_urls_per_owner: int = Field(default=600, ge=0)
    # On-the-fly renders at the edge (lazy variants, signed sizes) a client
    # address may cause: only requests that miss every cache tier and would
    # start a render count. One edge process renders a few per second
    # (``edge.max_concurrent_renders`` at a time); a page's first view with
    # lazy variants asks for one per image on it, a hundred at most.
    renders_per_address: int = Field(default=600, ge=0)
    # Writes to the record API (POST /v1/records, PATCH and DELETE of a record,
    # aliases, DELETE /v1/owners/{owner}): per token, and per owner where the
    # request names it. Reads are not limited. Each write is one short
    # transaction; an app relabelling a user's album does a few hundred.
    record_writes_per_token: int = Field(default=6000, ge=0)
    record_writes_per_owner: int = Field(default=600, ge=0)


class OwnerQuota(BaseModel):
    """One owner's storage: at most ``max_bytes`` bytes of originals and
    ``max_images`` records. Unset (``None``): no limit of that kind."""

    max_bytes: int | None = Field(default=None, ge=0)
    max_images: int | None = Field(default=None, ge=0)


class Quotas(BaseModel):
    """Storage quotas per owner (``ingest.quota``), counted in the record store,
    so every ingest process sees the same usage: ``default`` for every owner,
    ``owners`` overriding it whole for the owners it names
    (``PINHOLE_QUOTAS__OWNERS='{"alice": {"max_bytes": 1000000000}}'``).
    Unlimited unless configured. An upload over quota is refused
    ``403 quota-exceeded`` before its body is stored."""

    default: OwnerQuota = Field(default_factory=OwnerQuota)
    owners: dict[str, OwnerQuota] = Field(default_factory=dict)

    def for_owner(self, owner: str) -> OwnerQuota:
        return self.owners.get(owner, self.default)


FormatName = Literal["avif", "webp", "fallback"]


def _all_formats() -> list[FormatName]:
    return ["avif", "webp", "fallback"]


class PresetSetting(BaseModel):
    """One named preset (``[presets.<name>]`` in TOML, or ``PINHOLE_PRESETS`` as
    JSON ``{"<name>": {...}}``): a box, how it is filled, its formats and
    qualities, and who renders it. README, Presets."""

    model_config = {"extra": "forbid"}

    # Either or both; neither is full size (like "originals").
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    # inside: fit the box, keep the aspect, never upscale. cover: fill the exact
    # box (both sides needed) by cropping at ``gravity``.
    fit: Literal["inside", "cover"] = "inside"
    gravity: Literal["centre", "attention", "focal"] = "centre"
    formats: list[FormatName] = Field(default_factory=_all_formats)
    # Overrides transcode.<format>_quality for this preset ("fallback": JPEG's).
    quality: dict[FormatName, int] = Field(default_factory=dict)
    # Rendered by the edge on its first request instead of by the transcoder.
    lazy: bool = False

    @model_validator(mode="after")
    def _check(self) -> PresetSetting:
        if self.fit == "cover" and (self.width is None or self.height is None):
            raise ValueError("a cover preset needs both a width and a height")
        if self.gravity != "centre" and self.fit != "cover":
            raise ValueError("a gravity only applies to a cover preset")
        if not self.formats:
            raise ValueError("a preset needs at least one format")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats are listed twice: {self.formats}")
        for name, q in self.quality.items():
            if not 1 <= q <= 100:
                raise ValueError(f"quality of {name} must be 1..100, not {q}")
            if name not in self.formats:
                raise ValueError(f"a quality for {name}, which is not among the formats")
        return self

    def preset(self, name: str) -> Preset:
        return Preset(
            name,
            self.width,
            self.height,
            self.fit,
            self.gravity,
            tuple(f for f in FORMAT_NAMES if f in self.formats),
            tuple(sorted(self.quality.items())),
            self.lazy,
        )


def preset_table(presets: dict[str, PresetSetting], limits: Limits) -> PresetTable:
    """The defaults (236x, 474x, 736x, 1200x, originals), each replaced by a
    configured preset of its name, then the other configured presets in the
    order given; checked: URL-safe names, sizes within the limits, no two
    presets with the same definition."""
    table = {p.name: p for p in DEFAULT_PRESETS}
    for name, setting in presets.items():
        if not PRESET_NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise ValueError(
                f"a preset name is 1-32 of a-z, 0-9, - and _ (not {sorted(RESERVED_NAMES)}): "
                f"{name!r}"
            )
        if (setting.width or 0) > limits.max_width or (setting.height or 0) > limits.max_height:
            raise ValueError(
                f"preset {name!r} is larger than the size limit "
                f"({limits.max_width}x{limits.max_height})"
            )
        table[name] = setting.preset(name)
    seen: dict[str, str] = {}
    for preset in table.values():
        shape = json.dumps({k: v for k, v in preset.spec().items() if k != "name"}, sort_keys=True)
        if shape in seen:
            raise ValueError(f"presets {seen[shape]!r} and {preset.name!r} are the same preset")
        seen[shape] = preset.name
    return PresetTable(tuple(table.values()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PINHOLE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    storage: str = "file://./var/pinhole"
    queue: str = "memory://"
    cache: str = "memory://"
    # Records (owners, metadata, aliases): one SQLite file by default, so `pinhole
    # up` needs nothing installed; mysql://user:password@host:3306/db for MariaDB.
    records: str = "sqlite:///./var/pinhole/records.db"
    # Where clients reach the edge server; variant URLs in manifests start with it.
    public_url: str = "http://localhost:8080"
    # Where clients reach the ingest API (status URLs in upload replies).
    ingest_url: str = "http://localhost:8081"
    host: str = "127.0.0.1"
    edge_port: int = 8080
    ingest_port: int = 8081
    transcoder_port: int = 8082
    cdn_purge_port: int = 8083
    webhooks_port: int = 8084
    # Pending this long with no render, an image gets its job published again
    # (reconcile). Well above a normal upload-to-ready (seconds) and a normal
    # backlog, so a busy queue is not flooded with duplicates.
    reconcile_after_seconds: float = Field(default=300.0, ge=0)
    # Each /readyz check, all run at once: /readyz answers within about a second
    # whatever hangs (a load balancer's probe times out in 1-5 s), while a healthy
    # check (a HEAD of the bucket, a Kafka metadata request) takes milliseconds.
    readiness_timeout_seconds: float = Field(default=0.8, gt=0)
    log_level: str = "INFO"
    # Addresses and networks (CIDR) of the proxies in front of Pinhole (a load
    # balancer, a CDN, nginx). Only a request from one of these has its client
    # address read from ``forwarded_header`` (right-most untrusted hop); from any
    # other peer the header is ignored, so nobody can choose their own address.
    # Empty: every client is its TCP peer (behind a proxy, the proxy's address).
    trusted_proxies: list[str] = Field(default_factory=list)
    # The header the trusted proxies write: X-Forwarded-For, or RFC 7239 Forwarded.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"

    limits: Limits = Field(default_factory=Limits)
    transcode: Transcode = Field(default_factory=Transcode)
    kafka: Kafka = Field(default_factory=Kafka)
    hot_cache: Cache = Field(default_factory=Cache)
    s3: S3 = Field(default_factory=S3)
    auth: Auth = Field(default_factory=Auth)
    upload_urls: UploadUrls = Field(default_factory=UploadUrls)
    url_fetch: UrlFetch = Field(default_factory=UrlFetch)
    edge: Edge = Field(default_factory=Edge)
    sharding: Sharding = Field(default_factory=Sharding)
    cdn_purge: CdnPurge = Field(default_factory=CdnPurge)
    webhooks: Webhooks = Field(default_factory=Webhooks)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    record_shards: RecordShards = Field(default_factory=RecordShards)
    record_api: Records = Field(default_factory=Records)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    quotas: Quotas = Field(default_factory=Quotas)
    # Named presets beyond (or replacing) the default ladder: README, Presets.
    presets: dict[str, PresetSetting] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _presets(self) -> Settings:
        preset_table(self.presets, self.limits)  # refuse a bad table at start
        return self

    @property
    def preset_table(self) -> PresetTable:
        """The configured ladder, which every role uses (``pinhole.app.runtime``)."""
        return preset_table(self.presets, self.limits)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"a trusted proxy is an address or a network (CIDR), not {cidr!r}"
                ) from None
        return cidrs

    @property
    def status_base_url(self) -> str:
        return self.ingest_url.rstrip("/")

    @property
    def edge_base_url(self) -> str:
        return self.public_url.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PINHOLE_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"PINHOLE_CONFIG names {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
