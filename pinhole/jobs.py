"""Transcode jobs: the one place a job is made for an image and becomes a queue message.

Ingest publishes one per accepted upload; reconcile and import publish one for a
pending image they find. All three build it here, from the image's manifest."""

from __future__ import annotations

from metrics.definitions import JOBS_PUBLISHED
from pinhole.domain.job import TranscodeJob
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Manifest
from pinhole.errors import QueueUnavailable
from pinhole.ports import JobQueue, Message
from pinhole.settings import Kafka


def transcode_job(manifest: Manifest, request_id: str) -> TranscodeJob:
    """The job for a pending image: self-contained, so a worker needs nothing else.
    ``submitted_at`` is the acceptance time, which upload-to-ready is measured from."""
    return TranscodeJob(
        image_id=manifest.id,
        original_key=original_key(manifest.id),
        source=manifest.source,
        submitted_at=manifest.created_at,
        request_id=request_id,
    )


async def publish_job(queue: JobQueue, kafka: Kafka, job: TranscodeJob) -> None:
    """Keyed by image id, so every job of one image lands on one partition."""
    message = Message(key=job.image_id, value=job.encode(), headers={"request-id": job.request_id})
    try:
        await queue.publish(kafka.jobs_topic, message)
    except QueueUnavailable:
        JOBS_PUBLISHED.labels("error").inc()
        raise
    JOBS_PUBLISHED.labels("ok").inc()
