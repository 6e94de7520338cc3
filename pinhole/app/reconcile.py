"""Re-enqueue accepted uploads whose job may have been lost.

A pending manifest is the durable record of an accepted upload, but its job
lives in the queue: a broker that lost its log, an upload answered 503 while
the broker was down, or a crash between storing and publishing all leave an
image pending with no job. Reconcile walks the pending index (see
``pinhole.pending``), publishes a fresh job for every image still pending after
``older_than_seconds``, and drops index entries whose image is done.

A job published twice is harmless: the transcoder skips an image that is no
longer pending, and its writes are content-addressed. So reconcile may run
from several places at once (``pinhole reconcile``, and periodically in
``pinhole up`` and every transcoder: ``reconcile_periodically``) without
coordination. A requeued image's marker is rewritten, restarting its clock, so
each image gets at most one extra job per threshold however many run. Each pass
sets the pending gauges (how many, and the oldest one's age) that the
``PinholeUploadsPendingTooLong`` alert watches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from metrics.definitions import PENDING_IMAGES, PENDING_OLDEST_SECONDS, RECONCILE_ITEMS
from pinhole.app.bounded import for_each
from pinhole.app.progress import Progress
from pinhole.domain.ids import ImageId, InvalidImageId, parse_image_id
from pinhole.domain.keys import MANIFESTS_PREFIX, PENDING_PREFIX, manifest_key
from pinhole.domain.manifest import Status
from pinhole.errors import QueueUnavailable, TransientError
from pinhole.jobs import publish_job, transcode_job
from pinhole.logs import ThrottledLog
from pinhole.manifests import load_manifest
from pinhole.pending import clear_pending, image_id_of_marker, mark_pending
from pinhole.ports import BlobStore, JobQueue, ObjectInfo
from pinhole.retry import retry_transient
from pinhole.settings import Kafka, Settings

log = logging.getLogger("pinhole.reconcile")
# Every image of a pass fails alike while a dependency is down: one line for all.
_item_failures = ThrottledLog(log)
_pass_failures = ThrottledLog(log)

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
    # Images found pending (too recent ones included), and the oldest one's age.
    pending: int = 0
    oldest_pending_seconds: float = 0.0

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
        now: float,
        cutoff: float,
        dry_run: bool,
        publish_attempts: int,
    ) -> None:
        self.store = store
        self.queue = queue
        self.kafka = kafka
        self.now = now
        self.cutoff = cutoff
        self.dry_run = dry_run
        self.publish_attempts = publish_attempts
        # Acceptance time of every image found pending, for the pending gauges.
        self.pending_since: list[float] = []
        self.broker_down = False

    async def marker(self, info: ObjectInfo) -> str | None:
        image_id = image_id_of_marker(info.key)
        if image_id is None:
            return None
        if info.last_modified > self.cutoff:
            await self._note_if_pending(image_id)
            return TOO_RECENT
        return await self._requeue_if_pending(image_id, from_index=True)

    async def _note_if_pending(self, image_id: ImageId) -> None:
        """Count a recent marker's image if it is pending. Never cleaned here: a
        marker is written before its manifest, so "no manifest" may be an upload
        in progress."""
        try:
            manifest = await load_manifest(self.store, image_id)
        except (TransientError, ValueError):
            return  # only the gauges miss it; the next pass sees it again
        if manifest is not None and manifest.status is Status.PENDING:
            self.pending_since.append(manifest.created_at)

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
            self.pending_since.append(manifest.created_at)
            if self.dry_run:
                return REQUEUED
            if not from_index:
                await mark_pending(self.store, image_id)  # backfill the index
            job = transcode_job(manifest, REQUEST_ID)
            # A broker that just restarted answers UnknownError or
            # UnknownTopicOrPartition for a moment: ride that out here, so the
            # first run after a restart succeeds.
            await retry_transient(
                lambda: publish_job(self.queue, self.kafka, job),
                what="publish job",
                # Once one image has used up its retries the broker is down:
                # the rest of the pass fails fast and waits for the next one.
                attempts=1 if self.broker_down else self.publish_attempts,
                base_seconds=0.5,
            )
            if from_index:
                # Restart the image's clock: one more job per threshold at most,
                # however many transcoders run this pass.
                await mark_pending(self.store, image_id)
        except TransientError as exc:
            if isinstance(exc, QueueUnavailable):
                self.broker_down = True
            _item_failures.warning(
                type(exc).__name__,
                "reconcile: will retry next run",
                image_id=image_id,
                error=str(exc),
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
    publish_attempts: int = 8,
) -> ReconcileReport:
    """Publish a job for every image pending for longer than ``older_than_seconds``.

    ``full_scan`` reads every manifest instead of the pending index (and
    rebuilds the index for what it finds): for stores written before the
    index existed. ``progress_stream`` gets a progress bar (a TTY) or
    periodic lines (anything else); ``None`` draws nothing. A pass sets
    ``pinhole_pending_images`` and ``pinhole_pending_oldest_seconds``.
    """
    now = time.time() if now is None else now
    reconciler = _Reconciler(
        store,
        queue,
        kafka,
        now=now,
        cutoff=now - older_than_seconds,
        dry_run=dry_run,
        publish_attempts=publish_attempts,
    )
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
    report.pending = len(reconciler.pending_since)
    report.oldest_pending_seconds = max((now - t for t in reconciler.pending_since), default=0.0)
    PENDING_IMAGES.set(report.pending)
    PENDING_OLDEST_SECONDS.set(max(0.0, report.oldest_pending_seconds))
    # A periodic pass that found nothing to do says nothing.
    quiet = report.examined == report.too_recent and not report.cleaned
    (log.debug if quiet else log.info)(
        "reconcile done",
        extra={
            "examined": report.examined,
            "requeued": report.requeued,
            "cleaned": report.cleaned,
            "too_recent": report.too_recent,
            "failed": report.failed,
            "pending": report.pending,
            "oldest_pending_seconds": round(report.oldest_pending_seconds, 1),
            "dry_run": dry_run,
        },
    )
    return report


async def reconcile_periodically(
    store: BlobStore,
    queue: JobQueue,
    settings: Settings,
    *,
    first_older_than_seconds: float | None = None,
) -> None:
    """Reconcile now, then every ``settings.reconcile.interval_seconds`` (with
    jitter) for as long as the process runs, so pending work heals without an
    operator. Runs in every transcoder and in ``pinhole up``: several at once is
    safe (duplicate jobs are skipped). The first pass may use another threshold
    (``pinhole up`` after its in-process queue died: 0)."""
    periodic = settings.reconcile
    older_than = settings.reconcile_after_seconds
    if first_older_than_seconds is not None:
        older_than = first_older_than_seconds
    while True:
        try:
            await reconcile(
                store,
                queue,
                settings.kafka,
                older_than_seconds=older_than,
                publish_attempts=periodic.publish_attempts,
            )
            _pass_failures.recovered("pass", "reconcile: passes succeed again")
        except TransientError as exc:
            # Storage (the index listing) is down: try again next time.
            _pass_failures.warning("pass", "reconcile: pass failed", error=str(exc))
        except Exception:
            # A bug must not end healing for the life of the process (one line a pass).
            log.exception("reconcile: pass failed unexpectedly")
        older_than = settings.reconcile_after_seconds
        factor = 1.0 + random.uniform(-periodic.jitter, periodic.jitter)
        await asyncio.sleep(periodic.interval_seconds * factor)


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
    attempts = settings.reconcile.publish_attempts
    try:
        # A broker coming back (after losing its log, say) refuses for a moment.
        await retry_transient(
            components.queue.start, what="connect to queue", attempts=attempts, base_seconds=0.5
        )
        report = await reconcile(
            components.store,
            components.queue,
            settings.kafka,
            older_than_seconds=older_than_seconds,
            full_scan=full_scan,
            dry_run=dry_run,
            progress_stream=progress_stream or sys.stderr,
            publish_attempts=attempts,
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
