"""Re-enqueue accepted uploads whose job may have been lost.

A pending manifest is the durable record of an accepted upload, but its job
lives in the queue: a broker that lost its log, an upload answered 503 while
the broker was down, or a crash between storing and publishing all leave an
image pending with no job. Reconcile walks the pending index (see
``pinhole.pending``), publishes a fresh job for every image still pending after
``older_than_seconds``, and drops index entries whose image is done.

A job published twice is harmless: the transcoder skips an image that is no
longer pending, and its writes are content-addressed. So reconcile may run
from several places at once (``pinhole reconcile``, ``pinhole up`` and every
transcoder at start) without coordination.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from metrics.definitions import RECONCILE_ITEMS
from pinhole.app.bounded import for_each
from pinhole.app.progress import Progress
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import MANIFESTS_PREFIX, PENDING_PREFIX, manifest_key
from pinhole.domain.manifest import Status
from pinhole.errors import TransientError
from pinhole.jobs import publish_job, transcode_job
from pinhole.manifests import load_manifest
from pinhole.pending import clear_pending, image_id_of_marker, mark_pending
from pinhole.ports import BlobStore, JobQueue, ObjectInfo
from pinhole.settings import Kafka, Settings

log = logging.getLogger("pinhole.reconcile")

REQUEST_ID = "reconcile"
_CONCURRENCY = 16

REQUEUED = "requeued"
CLEANED = "cleaned"
TOO_RECENT = "too-recent"
FAILED = "failed"


@dataclass
class ReconcileReport:
    examined: int = 0
    requeued: int = 0
    # Index entries dropped because their image is ready, failed or gone.
    cleaned: int = 0
    too_recent: int = 0
    # Could not be read or published (storage or broker down); kept for next time.
    failed: int = 0

    def add(self, outcome: str) -> None:
        self.examined += 1
        attribute = outcome.replace("-", "_")
        setattr(self, attribute, getattr(self, attribute) + 1)
        RECONCILE_ITEMS.labels(outcome).inc()


def _manifest_id(key: str) -> ImageId | None:
    try:
        image_id = parse_image_id(key.rsplit("/", 1)[-1].removesuffix(".json"))
    except InvalidImageId:
        return None
    return image_id if key == manifest_key(image_id) else None


class _Reconciler:
    def __init__(
        self,
        store: BlobStore,
        queue: JobQueue,
        kafka: Kafka,
        *,
        cutoff: float,
        dry_run: bool,
    ) -> None:
        self.store = store
        self.queue = queue
        self.kafka = kafka
        self.cutoff = cutoff
        self.dry_run = dry_run

    async def marker(self, info: ObjectInfo) -> str | None:
        image_id = image_id_of_marker(info.key)
        if image_id is None:
            return None
        if info.last_modified > self.cutoff:
            return TOO_RECENT
        return await self._requeue_if_pending(image_id, from_index=True)

    async def manifest(self, info: ObjectInfo) -> str | None:
        image_id = _manifest_id(info.key)
        if image_id is None:
            return None
        if info.last_modified > self.cutoff:
            return TOO_RECENT
        outcome = await self._requeue_if_pending(image_id, from_index=False)
        # A full scan examines every image; only pending ones are worth a line.
        return outcome if outcome != CLEANED else None

    async def _requeue_if_pending(self, image_id: ImageId, *, from_index: bool) -> str:
        try:
            manifest = await load_manifest(self.store, image_id)
            if manifest is None or manifest.status is not Status.PENDING:
                if from_index and not self.dry_run:
                    await clear_pending(self.store, image_id)
                return CLEANED
            if self.dry_run:
                return REQUEUED
            if not from_index:
                await mark_pending(self.store, image_id)  # backfill the index
            await publish_job(self.queue, self.kafka, transcode_job(manifest, REQUEST_ID))
        except TransientError as exc:
            log.warning(
                "reconcile: will retry next run", extra={"image_id": image_id, "error": str(exc)}
            )
            return FAILED
        except ValueError as exc:  # an unreadable manifest: leave it for a human
            log.error("reconcile: bad manifest", extra={"image_id": image_id, "error": str(exc)})
            return FAILED
        log.debug("reconcile: job re-enqueued", extra={"image_id": image_id})
        return REQUEUED


async def reconcile(
    store: BlobStore,
    queue: JobQueue,
    kafka: Kafka,
    *,
    older_than_seconds: float,
    full_scan: bool = False,
    dry_run: bool = False,
    progress_stream: TextIO | None = None,
    now: float | None = None,
    concurrency: int = _CONCURRENCY,
) -> ReconcileReport:
    """Publish a job for every image pending for longer than ``older_than_seconds``.

    ``full_scan`` reads every manifest instead of the pending index (and
    rebuilds the index for what it finds): for stores written before the
    index existed. ``progress_stream`` gets a progress bar (a TTY) or
    periodic lines (anything else); ``None`` draws nothing.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    reconciler = _Reconciler(store, queue, kafka, cutoff=cutoff, dry_run=dry_run)
    report = ReconcileReport()
    items: AsyncIterator[ObjectInfo] | list[ObjectInfo]
    if full_scan:
        total = None
        items = store.list(MANIFESTS_PREFIX)
        handle = reconciler.manifest
    else:
        # The index holds only the backlog, so listing it whole is cheap and gives a total.
        markers = [info async for info in store.list(PENDING_PREFIX)]
        total = len(markers)
        items = markers
        handle = reconciler.marker
    label = "reconcile (dry run)" if dry_run else "reconcile"
    progress = Progress(label, total, stream=progress_stream) if progress_stream else None

    async def settle(info: ObjectInfo) -> None:
        outcome = await handle(info)
        if outcome is not None:
            report.add(outcome)
        if progress is not None:
            progress.advance(tally=outcome)

    try:
        # Reads a full scan's listing lazily, as fast as it is handled.
        await for_each(items, settle, concurrency)
    finally:
        if progress is not None:
            progress.close()
    log.info(
        "reconcile done",
        extra={
            "examined": report.examined,
            "requeued": report.requeued,
            "cleaned": report.cleaned,
            "too_recent": report.too_recent,
            "failed": report.failed,
            "dry_run": dry_run,
        },
    )
    return report


async def run_reconcile(
    settings: Settings,
    *,
    older_than_seconds: float,
    full_scan: bool = False,
    dry_run: bool = False,
    progress_stream: TextIO | None = None,
) -> int:
    """``pinhole reconcile``: the exit status (1 if anything could not be done)."""
    from pinhole.app.wiring import build_components

    components = build_components(settings)
    try:
        await components.queue.start()
        report = await reconcile(
            components.store,
            components.queue,
            settings.kafka,
            older_than_seconds=older_than_seconds,
            full_scan=full_scan,
            dry_run=dry_run,
            progress_stream=progress_stream or sys.stderr,
        )
    except TransientError as exc:
        print(f"pinhole reconcile: {exc}", file=sys.stderr)
        return 1
    finally:
        await components.close()
    print(
        f"reconcile: examined {report.examined}, requeued {report.requeued}, "
        f"cleaned {report.cleaned}, too recent {report.too_recent}, failed {report.failed}"
        + (" (dry run: nothing published or removed)" if dry_run else "")
    )
    return 1 if report.failed else 0
