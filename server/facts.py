"""What the hot path needs from a manifest (is it ready, does it have alpha),
cached per process so a negotiated fallback request does not read storage.

Only ``ready`` facts are cached: a ready image's source never changes (ids are
content hashes). Pending and failed images are re-read every time, so they turn
ready without a restart. A deleted image may keep its entry until it ages out;
that only picks the fallback format, and the variant lookup itself then misses.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from pinhole.domain.ids import ImageId
from pinhole.domain.manifest import Manifest, Status
from pinhole.manifests import load_manifest
from pinhole.ports import BlobStore
from server.flight import SingleFlight


@dataclass(frozen=True, slots=True)
class ImageFacts:
    status: Status
    has_alpha: bool
    manifest: Manifest
    # Negotiated to animated WebP or GIF (pinhole.domain.ladder.format_for_class).
    animated: bool = False


class ManifestFacts:
    def __init__(self, store: BlobStore, max_entries: int = 65_536, ttl_seconds: float = 300.0):
        self.store = store
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
