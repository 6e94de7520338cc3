"""What the hot path needs from a manifest (is it ready, does it have alpha),
cached per process so a negotiated fallback request does not read storage.

Only ``ready`` facts are cached: a ready image's source never changes (ids are
content hashes). Pending and failed images are re-read every time, so they turn
ready without a restart. A deleted image may keep its entry until it ages out;
that only picks the fallback format, and the variant lookup itself then misses.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from metrics.definitions import PRESET_MISMATCHES
from pinhole.domain.ids import ImageId
from pinhole.domain.ladder import PresetTable, current
from pinhole.domain.manifest import Manifest, Status
from pinhole.errors import PresetMismatch
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from server.flight import SingleFlight

log = logging.getLogger("pinhole.server")


class PresetWatch:
    """Whether the manifests this edge reads were rendered with its preset table.

    A manifest carries the fingerprint of the table that rendered it; another
    one means the transcoders and this edge are configured differently. Each is
    logged (once per fingerprint), counted (``pinhole_preset_mismatches_total``)
    and named in ``/readyz`` (``checks.presets`` degraded), and the edge renders
    nothing for such an image (``503 preset-mismatch``) rather than mix its own
    presets' variants with the transcoder's."""

    def __init__(self, table: PresetTable) -> None:
        self.table = table
        self.mismatched: dict[str, int] = {}

    def agrees(self, manifest: Manifest) -> bool:
        theirs = manifest.presets
        if theirs is None or theirs == self.table.fingerprint:
            return True
        if theirs not in self.mismatched:
            log.warning(
                "a manifest was rendered with another preset table than this edge's",
                extra={
                    "image_id": manifest.id,
                    "manifest_presets": theirs,
                    "edge_presets": self.table.fingerprint,
                },
            )
        self.mismatched[theirs] = self.mismatched.get(theirs, 0) + 1
        PRESET_MISMATCHES.inc()
        return False

    def details(self) -> dict[str, object]:
        """What ``/readyz`` says about the presets."""
        return {
            "presets": {
                "fingerprint": self.table.fingerprint,
                "names": list(self.table.by_name),
                "mismatched": dict(self.mismatched),
            }
        }

    async def check(self) -> None:
        """``/readyz``'s ``presets`` check: degraded once a mismatch was seen."""
        if self.mismatched:
            raise PresetMismatch(f"manifests of preset tables {sorted(self.mismatched)}")


@dataclass(frozen=True, slots=True)
class ImageFacts:
    status: Status
    has_alpha: bool
    manifest: Manifest
    # Negotiated to animated WebP or GIF (pinhole.domain.ladder.format_for_class).
    animated: bool = False


class ManifestFacts:
    def __init__(
        self,
        store: BlobStore,
        max_entries: int = 65_536,
        ttl_seconds: float = 300.0,
        watch: PresetWatch | None = None,
    ):
        self.store = store
        self.watch = watch or PresetWatch(current())
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._ready: OrderedDict[ImageId, tuple[float, ImageFacts]] = OrderedDict()
        self._flight: SingleFlight[ImageFacts | None] = SingleFlight()

    def cached(self, image_id: ImageId) -> ImageFacts | None:
        found = self._ready.get(image_id)
        if found is None:
            return None
        expires_at, facts = found
        if expires_at <= time.monotonic():
            del self._ready[image_id]
            return None
        self._ready.move_to_end(image_id)
        return facts

    async def get(self, image_id: ImageId, *, fresh: bool = False) -> ImageFacts | None:
        """The facts, or ``None`` when there is no manifest. ``fresh`` skips the
        cache (the render path wants the current status); concurrent callers for
        one image share one read either way."""
        if not fresh:
            facts = self.cached(image_id)
            if facts is not None:
                return facts
        return await self._flight.run(image_id, lambda: self._load(image_id))

    async def _load(self, image_id: ImageId) -> ImageFacts | None:
        manifest = await load_manifest(self.store, image_id)
        if manifest is None:
            self._ready.pop(image_id, None)
            return None
        self.watch.agrees(manifest)
        facts = ImageFacts(
            manifest.status, manifest.source.has_alpha, manifest, manifest.source.animated
        )
        if manifest.status is Status.READY:
            self._ready[image_id] = (time.monotonic() + self.ttl_seconds, facts)
            self._ready.move_to_end(image_id)
            while len(self._ready) > self.max_entries:
                self._ready.popitem(last=False)
        else:
            self._ready.pop(image_id, None)
        return facts

    def forget(self, image_id: ImageId) -> None:
        self._ready.pop(image_id, None)
