"""Is an image private? What the edge knows, per process, from the record store.

An image is private when every record of it is private: at least one private
record and no public one (``RecordStore.count_by_image_visibility``, one indexed
count per shard server). An image with no record at all is public (uploaded
without an owner, as every image was before records existed), unless its
records all went and it waits for the sweep (its ``sweep/`` marker is there:
one storage HEAD): deleting a private image's last record must not make it
public for the grace period, and nobody wants such an image served. Content ids are
shared by everyone who uploads the same bytes, so one public record of them
makes the image public for everyone (README, "Private records").

Each edge process keeps the answer for ``Edge.visibility_ttl_seconds`` (30 s),
so a hot image costs one query per process per TTL, and a dict lookup per
request; concurrent misses for one image share one query. A change of
visibility publishes ``image.visibility`` (``ingest.records``), and every edge
process forgets the image on it at once (``server.purge.EdgePurger``), so a
change is honoured within the event's delivery (well under a second on a
healthy broker); a lost or late event is honoured once the TTL runs out. The
TTL is the bound because nothing else tells a process the flag changed in a
shared database, and the events are what make the common case fast.

The record store down: a process keeps using what it last learned (an event
would have made it forget an answer that changed), asking again every few
seconds, and an image it knows nothing of is answered ``503`` rather than
guessed public or private. A query in flight when an event arrives answers the
requests that wait for it, but is not kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from pinhole.domain.ids import ImageId
from pinhole.domain.keys import sweep_key
from pinhole.errors import RecordStoreUnavailable, TransientError
from pinhole.ports import BlobStore, RecordStore
from server.flight import SingleFlight

# With the record store down, how long a stale answer is used before asking again.
_RETRY_SECONDS = 5.0


class Visibility:
    def __init__(
        self,
        records: RecordStore,
        store: BlobStore,
        ttl_seconds: float,
        max_entries: int = 262_144,
    ) -> None:
        self.records = records
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        # image id -> (monotonic time the answer goes stale, private?)
        self._known: OrderedDict[ImageId, tuple[float, bool]] = OrderedDict()
        self._flight: SingleFlight[bool] = SingleFlight()
        # Bumped by every ``forget``: an answer read before an event arrived
        # (the query in flight across it) is used once, never kept for a TTL.
        self._epoch = 0

    def cached(self, image_id: ImageId) -> bool | None:
        """The fresh answer this process holds, or ``None``: no coroutine for the
        hot path."""
        found = self._known.get(image_id)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]

    async def is_private(self, image_id: ImageId) -> bool:
        known = self.cached(image_id)
        if known is not None:
            return known
        return await self._flight.run(image_id, lambda: self._load(image_id))

    async def _load(self, image_id: ImageId) -> bool:
        epoch = self._epoch
        try:
            public, private = await self.records.count_by_image_visibility(image_id)
            if public == 0 and private == 0:
                answer = await self.store.head(sweep_key(image_id)) is not None
            else:
                answer = public == 0
        except (RecordStoreUnavailable, TransientError):
            stale = self._known.get(image_id)
            if stale is None:
                raise
            # Asked again after a short pause, not on every request: each try
            # waits for the store's timeout.
            self._known[image_id] = (
                time.monotonic() + min(self.ttl_seconds, _RETRY_SECONDS),
                stale[1],
            )
            return stale[1]
        if epoch != self._epoch:
            return answer
        self._known[image_id] = (time.monotonic() + self.ttl_seconds, answer)
        self._known.move_to_end(image_id)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        return answer

    def forget(self, image_id: ImageId) -> None:
        self._epoch += 1
        self._known.pop(image_id, None)
