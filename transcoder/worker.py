"""The transcode worker loop.

Per job: read the original once, render the ladder on a bounded thread pool,
write every variant, write the ``ready`` manifest last, publish
``image.ready``, and only then ack (which lets the adapter commit). Transient
errors retry with backoff and never skip a job; an image that can never
succeed is dead-lettered with a reason and its manifest says ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from metrics.definitions import (
    JOBS_DEAD_LETTERED,
    JOBS_IN_FLIGHT,
    JOBS_PROCESSED,
    JOBS_RETRIED,
    TRANSCODE_SECONDS,
    UPLOAD_TO_READY_SECONDS,
)
from pinhole.domain.job import TranscodeJob
from pinhole.domain.keys import variant_key
from pinhole.domain.manifest import Failure, Manifest, Status, Variant
from pinhole.errors import ObjectNotFound, PinholeError, QueueUnavailable
from pinhole.events import IMAGE_FAILED, IMAGE_READY, event_message
from pinhole.logs import ThrottledLog, request_context
from pinhole.manifests import load_manifest, save_manifest
from pinhole.ports import BlobStore, Delivery, JobQueue, LadderEngine, Message, Rendering
from pinhole.retry import retry_transient
from pinhole.settings import Settings

log = logging.getLogger("pinhole.transcoder")
_outage = ThrottledLog(log)

_UNEXPECTED_ERROR_ATTEMPTS = 3

# The ``result`` of pinhole_jobs_processed_total: rendered, dead-lettered, or a
# duplicate of an image already done (counted apart, so "ready" counts renders).
READY = "ready"
FAILED = "failed"
SKIPPED = "skipped"


class _KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class PermanentJobError(Exception):
    """The job can never succeed; dead-letter it with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# After a lost subscription, before the next (the broker's own reconnects are
# paced by aiokafka; this only keeps a failing subscribe from spinning).
RESUBSCRIBE_PAUSE_SECONDS = 1.0


class Transcoder:
    def __init__(
        self, settings: Settings, store: BlobStore, queue: JobQueue, engine: LadderEngine
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.engine = engine
        # Its fingerprint goes into every manifest this worker writes.
        self.presets = settings.preset_table
        # One thread per job in flight; the engine spreads each job's encodes
        # over its own pool sized to the cores.
        self.pool = ThreadPoolExecutor(
            max_workers=settings.transcode.max_in_flight, thread_name_prefix="render"
        )
        self._stopping = asyncio.Event()
        self._image_locks = _KeyedLocks()
        self.rendered_jobs = 0

    def stop(self) -> None:
        """Stop fetching; the jobs in hand finish and are acked first."""
        self._stopping.set()

    async def _unless_stopping(self, pending: asyncio.Future[Any]) -> bool:
        """Wait for ``pending``; if a stop comes first, cancel it and say so."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if pending.done():
            return True
        pending.cancel()
        return False

    async def run(self) -> None:
        """Consume until ``stop()``. A subscription that fails (a broker gone
        between the queue's connection and the subscribe, or a fetch it gives up
        on) is opened again after a pause: the worker never ends but by a stop."""
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume()
                except QueueUnavailable as exc:
                    log.warning(
                        "transcoder lost its subscription; subscribing again",
                        extra={"error": str(exc)},
                    )
                    pause = asyncio.ensure_future(asyncio.sleep(RESUBSCRIBE_PAUSE_SECONDS))
                    await self._unless_stopping(pause)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.info("transcoder stopped")

    async def _consume(self) -> None:
        kafka = self.settings.kafka
        subscription = await self.queue.subscribe(kafka.jobs_topic, kafka.consumer_group)
        log.info("transcoder consuming", extra={"topic": kafka.jobs_topic})
        deliveries = aiter(subscription)
        # Up to max_in_flight jobs at once. Each acks when its manifest is
        # written; the adapter commits only the contiguous acked prefix of a
        # partition, so a slow job holds back the commit, never loses a job.
        slots = asyncio.Semaphore(self.settings.transcode.max_in_flight)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                if not await self._unless_stopping(asyncio.ensure_future(slots.acquire())):
                    break
                next_delivery = asyncio.ensure_future(anext(deliveries))
                if not await self._unless_stopping(next_delivery):
                    slots.release()
                    break
                try:
                    delivery = next_delivery.result()
                except StopAsyncIteration:
                    slots.release()
                    break
                task = asyncio.create_task(self._handle_in_slot(delivery, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            # Stop fetching, finish (and ack) what is in hand, then close, which
            # commits the acked prefix and leaves the group.
            if in_flight:
                log.info("finishing jobs in flight", extra={"jobs": len(in_flight)})
                await asyncio.gather(*in_flight, return_exceptions=True)
            await subscription.close()

    async def _handle_in_slot(self, delivery: Delivery, slots: asyncio.Semaphore) -> None:
        try:
            await self.handle(delivery)
        except QueueUnavailable as exc:
            # The commit after the ack failed (the broker is down or lost its
            # log): the ack is kept and goes out with the next commit; a
            # redelivery would be harmless anyway. Said once, not per job.
            _outage.warning("commit", "job done but not committed yet", error=str(exc))
        except Exception:
            log.exception("job handling failed after processing")
        finally:
            slots.release()

    async def handle(self, delivery: Delivery) -> None:
        # Ingest puts the upload's request id on the message: every log line of the job has it.
        with request_context(delivery.message.headers.get("request-id", "")):
            JOBS_IN_FLIGHT.inc()
            try:
                await self._handle_with_retries(delivery.message)
            finally:
                JOBS_IN_FLIGHT.dec()
            await delivery.ack()

    async def _handle_with_retries(self, message: Message) -> None:
        """A bug must not kill the worker nor wedge the partition: an unexpected
        error is retried a few times, then the job is dead-lettered."""
        try:
            job = self._decode(message)
        except PermanentJobError as exc:
            JOBS_PROCESSED.labels(await self._dead_letter(message, None, exc)).inc()
            return
        # Jobs of one image share a partition, so a duplicate (a redelivery, a
        # reconcile) is usually in hand in this very process: one at a time per
        # image, the second sees the first's result and skips instead of
        # rendering, or dead-lettering, the image again.
        async with self._image_locks.hold(job.image_id):
            JOBS_PROCESSED.labels(await self._attempts(message, job)).inc()

    async def _attempts(self, message: Message, job: TranscodeJob) -> str:
        for attempt in range(1, _UNEXPECTED_ERROR_ATTEMPTS + 1):
            try:
                return await self.process(job)
            except PermanentJobError as exc:
                return await self._dead_letter(message, job, exc)
            except Exception as exc:
                log.exception(
                    "unexpected error in job", extra={"key": message.key, "attempt": attempt}
                )
                if attempt == _UNEXPECTED_ERROR_ATTEMPTS:
                    return await self._dead_letter(
                        message, job, PermanentJobError("internal-error", type(exc).__name__)
                    )
                JOBS_RETRIED.inc()
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable: the last attempt returns")

    def _decode(self, message: Message) -> TranscodeJob:
        try:
            return TranscodeJob.decode(message.value)
        except ValidationError as exc:
            raise PermanentJobError("malformed-job", str(exc).splitlines()[0]) from exc

    async def process(self, job: TranscodeJob) -> str:
        """The job's outcome: ``READY`` once rendered, ``SKIPPED`` for a job of an
        image already done or deleted (a duplicate: redelivery, reconcile)."""
        store = self.store
        existing = await retry_transient(
            lambda: load_manifest(store, job.image_id),
            what="load manifest",
            on_retry=JOBS_RETRIED.inc,
        )
        if existing is None:
            # Ingest writes the pending manifest before it publishes, so a job with
            # no manifest is for an image deleted since: rendering it would bring it back.
            log.info("image deleted; job dropped", extra={"image_id": job.image_id})
            return SKIPPED
        if existing.status is not Status.PENDING:
            log.info("already processed", extra={"image_id": job.image_id})
            return SKIPPED
        try:
            original = await retry_transient(
                lambda: store.get(job.original_key), what="read original", on_retry=JOBS_RETRIED.inc
            )
        except ObjectNotFound as exc:
            raise PermanentJobError("original-missing", "The original is not in storage.") from exc
        focal = existing.focal_point
        rendering = await self._render(original.body, job.model_copy(update={"focal": focal}))
        for v in rendering.variants:
            TRANSCODE_SECONDS.labels(v.preset.name, v.fmt.value).observe(v.seconds)
        # All variants at once: storage latency, not bandwidth, bounds a ladder's writes.
        await asyncio.gather(
            *(
                retry_transient(
                    functools.partial(
                        store.put,
                        variant_key(v.preset, job.image_id, v.fmt),
                        v.body,
                        content_type=v.fmt.media_type,
                    ),
                    what="write variant",
                    on_retry=JOBS_RETRIED.inc,
                )
                for v in rendering.variants
            )
        )
        if await self._deleted_meanwhile(job, rendering):
            return SKIPPED
        now = time.time()
        manifest = Manifest(
            id=job.image_id,
            status=Status.READY,
            source=job.source,
            created_at=existing.created_at,
            updated_at=now,
            variants=[
                Variant(
                    preset=v.preset.name,
                    format=v.fmt,
                    width=v.width,
                    height=v.height,
                    bytes=len(v.body),
                )
                for v in rendering.variants
            ],
            placeholder=rendering.placeholder,
            animation=rendering.animation,
            presets=self.presets.fingerprint,
            focal=existing.focal,
        )
        # The manifest goes last: readers trust a ready manifest to mean every variant exists.
        await retry_transient(
            lambda: save_manifest(store, manifest), what="write manifest", on_retry=JOBS_RETRIED.inc
        )
        await self._publish_event(
            event_message(IMAGE_READY, job.image_id, request_id=job.request_id)
        )
        UPLOAD_TO_READY_SECONDS.observe(max(0.0, now - job.submitted_at))
        self.rendered_jobs += 1
        log.info(
            "image ready",
            extra={
                "image_id": job.image_id,
                "request_id": job.request_id,
                "variants": len(rendering.variants),
            },
        )
        return READY

    async def _deleted_meanwhile(self, job: TranscodeJob, rendering: Rendering) -> bool:
        """A DELETE during the render removed the manifest: take back what we wrote
        instead of resurrecting the image with a ready manifest."""
        current = await retry_transient(
            lambda: load_manifest(self.store, job.image_id), what="load manifest"
        )
        if current is not None:
            return False
        log.info("image deleted during render; variants removed", extra={"image_id": job.image_id})
        await asyncio.gather(
            *(
                retry_transient(
                    functools.partial(
                        self.store.delete, variant_key(v.preset, job.image_id, v.fmt)
                    ),
                    what="delete variant",
                )
                for v in rendering.variants
            )
        )
        return True

    async def _render(self, data: bytes, job: TranscodeJob) -> Rendering:
        loop = asyncio.get_running_loop()
        try:
            # The render thread logs with the job's request id too.
            context = contextvars.copy_context()
            render = functools.partial(self.engine.render_ladder, focal=job.focal)
            return await loop.run_in_executor(self.pool, context.run, render, data, job.source)
        except PinholeError as exc:
            raise PermanentJobError(exc.code, exc.message) from exc

    async def _dead_letter(
        self, message: Message, job: TranscodeJob | None, exc: PermanentJobError
    ) -> str:
        """Dead-letter the job (``job`` is ``None`` if it did not decode) and mark
        its image ``failed``: ``FAILED``; or ``SKIPPED`` if the image is already
        ``failed`` (a duplicate job of an image dead-lettered once already: one
        image, one dead letter)."""
        existing = None
        if job is not None:
            image_id = job.image_id
            existing = await retry_transient(
                lambda: load_manifest(self.store, image_id), what="load manifest"
            )
            if existing is not None and existing.status is Status.FAILED:
                log.info(
                    "already failed; not dead-lettered again",
                    extra={"image_id": image_id, "reason": exc.code},
                )
                return SKIPPED
        log.warning(
            "job dead-lettered",
            extra={"key": message.key, "reason": exc.code, "error": exc.message},
        )
        JOBS_DEAD_LETTERED.labels(exc.code).inc()
        kafka = self.settings.kafka
        headers = {**message.headers, "reason": exc.code, "reason-message": exc.message[:500]}
        await retry_transient(
            lambda: self.queue.publish(
                kafka.dead_letter_topic, Message(message.key, message.value, headers)
            ),
            what="dead-letter",
        )
        if job is None or existing is None:
            return FAILED  # undecodable, or deleted: a failed manifest would bring it back
        failed = Manifest(
            id=job.image_id,
            status=Status.FAILED,
            source=job.source,
            created_at=existing.created_at,
            updated_at=time.time(),
            failure=Failure(code=exc.code, message=exc.message),
        )
        await retry_transient(lambda: save_manifest(self.store, failed), what="write manifest")
        await self._publish_event(
            event_message(IMAGE_FAILED, job.image_id, request_id=job.request_id, reason=exc.code)
        )
        return FAILED

    async def _publish_event(self, message: Message) -> None:
        await retry_transient(
            lambda: self.queue.publish(self.settings.kafka.events_topic, message),
            what="publish event",
        )
