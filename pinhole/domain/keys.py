"""Storage keys and public URLs: the only place they are built.

Built from ids and presets only, never from user input, so a key can never
escape its prefix. The server parses URLs with ``parse_variant_path``, the
inverse of ``variant_path``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id, shard_of
from pinhole.domain.ladder import PRESETS_BY_NAME, Format, Preset, on_install


def fan_out(image_id: ImageId) -> str:
    """``ab/cd/ef`` from the id's first six hex characters, like i.pinimg.com."""
    return f"{image_id[0:2]}/{image_id[2:4]}/{image_id[4:6]}"


# Every top-level prefix of the store. The image prefixes end in the fan-out, so
# ``shard_of_key`` routes them; ``control/`` holds documents of no image (the shard
# map, migration cursors and leases), which live in the "default" store.
ORIGINALS_PREFIX = "originals/"
VARIANTS_PREFIX = "variants/"
MANIFESTS_PREFIX = "manifests/"
PENDING_PREFIX = "pending/"
# Cache purges a delete could not do (Redis down): retried by every edge.
PURGE_PREFIX = "purge/"
# Images whose last record went away: deleted after a grace period (ingest.sweep).
SWEEP_PREFIX = "sweep/"
CONTROL_PREFIX = "control/"
SHARD_MAP_KEY = f"{CONTROL_PREFIX}shardmap.json"
IMAGE_LOCKS_PREFIX = f"{CONTROL_PREFIX}locks/images/"
MIGRATIONS_PREFIX = f"{CONTROL_PREFIX}migrations/"
MIGRATION_LEASE_PREFIX = f"{MIGRATIONS_PREFIX}lease-"
# One object per used upload URL (ingest.upload_urls): the atomic claim that makes
# each URL good for one upload across every ingest process.
UPLOAD_CLAIMS_PREFIX = f"{CONTROL_PREFIX}upload-claims/"


def original_key(image_id: ImageId) -> str:
    return f"{ORIGINALS_PREFIX}{fan_out(image_id)}/{image_id}"


def manifest_key(image_id: ImageId) -> str:
    return f"{MANIFESTS_PREFIX}{fan_out(image_id)}/{image_id}.json"


def variant_key(preset: Preset, image_id: ImageId, fmt: Format) -> str:
    return f"{VARIANTS_PREFIX}{preset.name}/{fan_out(image_id)}/{image_id}.{fmt.extension}"


def pending_key(image_id: ImageId) -> str:
    """The pending index's marker of an accepted upload (``pinhole.pending``)."""
    return f"{PENDING_PREFIX}{fan_out(image_id)}/{image_id}"


def purge_key(image_id: ImageId) -> str:
    """The marker of a deleted image whose hot-cache entries still need purging."""
    return f"{PURGE_PREFIX}{fan_out(image_id)}/{image_id}"


def image_id_of_purge_key(key: str) -> ImageId | None:
    """The inverse of ``purge_key``; ``None`` for any other key."""
    try:
        image_id = parse_image_id(key.rsplit("/", 1)[-1])
    except InvalidImageId:
        return None
    return image_id if key == purge_key(image_id) else None


def sweep_key(image_id: ImageId) -> str:
    """The marker of an image no record names any more, due for deletion."""
    return f"{SWEEP_PREFIX}{fan_out(image_id)}/{image_id}"


def image_id_of_sweep_key(key: str) -> ImageId | None:
    """The inverse of ``sweep_key``; ``None`` for any other key."""
    try:
        image_id = parse_image_id(key.rsplit("/", 1)[-1])
    except InvalidImageId:
        return None
    return image_id if key == sweep_key(image_id) else None


def image_lock_key(image_id: ImageId) -> str:
    """The lock a sweep and a re-upload of one image take, so neither sees the
    other half done (``pinhole.locks``)."""
    return f"{IMAGE_LOCKS_PREFIX}{image_id}.json"


def migration_cursor_key(shards: str, target: str) -> str:
    """Where ``pinhole migrate`` keeps its place in a move of ``shards`` to ``target``."""
    return f"{MIGRATIONS_PREFIX}{shards}-to-{target}.json"


def upload_claim_key(expires_at: int, upload_id: str) -> str:
    """The claim of a used upload URL. The URL's expiry leads (ten digits), so a
    listing is in expiry order and a sweep of expired claims stops at the first
    live one. ``upload_id`` is 32 lowercase hex characters (checked)."""
    if len(upload_id) != 32 or upload_id.strip("0123456789abcdef"):
        raise ValueError(f"not an upload id: {upload_id[:40]!r}")
    if not 0 <= expires_at < 10**10:
        raise ValueError(f"expiry {expires_at} is out of range")
    return f"{UPLOAD_CLAIMS_PREFIX}{expires_at:010d}-{upload_id}.json"


def upload_claim_expiry(key: str) -> int | None:
    """The expiry ``upload_claim_key`` put in ``key``; ``None`` for another key."""
    name = key.removeprefix(UPLOAD_CLAIMS_PREFIX)
    stamp, dash, _rest = name.partition("-")
    if name == key or not dash or len(stamp) != 10 or not stamp.isdigit():
        return None
    return int(stamp)


def migration_lease_key(generation: int) -> str:
    return f"{MIGRATION_LEASE_PREFIX}{generation:010d}.json"


def migration_lease_generation(key: str) -> int:
    """The inverse of ``migration_lease_key``; ``ValueError`` for another key."""
    if not key.startswith(MIGRATION_LEASE_PREFIX) or not key.endswith(".json"):
        raise ValueError(f"not a migration lease key: {key!r}")
    return int(key.removeprefix(MIGRATION_LEASE_PREFIX).removesuffix(".json"))


def variant_path(preset: Preset, image_id: ImageId, fmt: Format | None = None) -> str:
    """Edge URL path; without a format it is the Accept-negotiated URL."""
    base = f"/{preset.name}/{fan_out(image_id)}/{image_id}"
    return base if fmt is None else f"{base}.{fmt.extension}"


def variant_url(base_url: str, preset: Preset, image_id: ImageId, fmt: Format | None) -> str:
    return base_url.rstrip("/") + variant_path(preset, image_id, fmt)


def alias_path(owner: str, alias: str, preset: Preset, fmt: Format | None = None) -> str:
    """The stable edge URL of an owner's alias: a short-cached redirect to
    ``variant_path`` of the image the alias names now. ``owner`` and ``alias``
    are checked names (``pinhole.domain.record``), URL-safe as they are."""
    base = f"/a/{owner}/{alias}/{preset.name}"
    return base if fmt is None else f"{base}.{fmt.extension}"


def parse_alias_name(name: str) -> tuple[Preset, Format | None]:
    """The last segment of ``alias_path``: ``<preset>[.<ext>]``."""
    preset_name, dot, ext = name.partition(".")
    preset = PRESETS_BY_NAME.get(preset_name)
    if preset is None:
        raise InvalidVariantPath(f"unknown preset {preset_name[:32]!r}")
    if not dot:
        return preset, None
    try:
        return preset, Format.from_extension(ext)
    except ValueError as exc:
        raise InvalidVariantPath(f"unknown extension {ext[:16]!r}") from exc


def status_path(image_id: ImageId) -> str:
    return f"/v1/images/{image_id}"


def status_url(base_url: str, image_id: ImageId) -> str:
    return base_url.rstrip("/") + status_path(image_id)


def shard_of_key(key: str) -> int | None:
    """The virtual shard of the image a storage key belongs to, from the key alone.

    Every key built here ends in ``ab/cd/ef/<id>[.ext]``, so the store that holds
    any key is found with no lookup. ``None`` for a key that names no image
    (a control document): those live in the "default" store."""
    head, _, name = key.rpartition("/")
    stem = name.partition(".")[0]
    try:
        image_id = parse_image_id(stem)
    except InvalidImageId:
        return None
    # The fan-out must agree, so a stray 32-hex name elsewhere is not misrouted.
    if not (head + "/").endswith("/" + fan_out(image_id) + "/") and head != fan_out(image_id):
        return None
    return shard_of(image_id)


class InvalidVariantPath(ValueError):
    """The URL does not name a variant: bad preset, id, fan-out or extension."""


@dataclass(frozen=True, slots=True)
class VariantRequest:
    preset: Preset
    image_id: ImageId
    fmt: Format | None  # None: negotiate from Accept


# Hot URLs repeat: parse each once (a refused URL raises, and is not cached).
@functools.lru_cache(maxsize=16384)
def parse_variant_path(preset_name: str, fan: str, name: str) -> VariantRequest:
    """Inverse of ``variant_path``: ``(preset, "ab/cd/ef", "<id>[.ext]")``."""
    preset = PRESETS_BY_NAME.get(preset_name)
    if preset is None:
        raise InvalidVariantPath(f"unknown preset {preset_name[:32]!r}")
    stem, dot, ext = name.partition(".")
    try:
        image_id = parse_image_id(stem)
    except InvalidImageId as exc:
        raise InvalidVariantPath("malformed image id") from exc
    if fan != fan_out(image_id):
        raise InvalidVariantPath("fan-out does not match the image id")
    fmt: Format | None = None
    if dot:
        try:
            fmt = Format.from_extension(ext)
        except ValueError as exc:
            raise InvalidVariantPath(f"unknown extension {ext[:16]!r}") from exc
    return VariantRequest(preset, image_id, fmt)


# The presets a URL may name are the installed table's (pinhole.app.runtime).
on_install(parse_variant_path.cache_clear)
