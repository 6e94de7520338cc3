"""Publishing transcode jobs: the one place a job becomes a queue message."""

from __future__ import annotations

from metrics.definitions import JOBS_PUBLISHED
from pinhole.domain.job import TranscodeJob
from pinhole.errors import QueueUnavailable
from pinhole.ports import JobQueue, Message
from pinhole.settings import Kafka


async def publish_job(queue: JobQueue, kafka: Kafka, job: TranscodeJob) -> None:
    """Keyed by image id, so every job of one image lands on one partition."""
    message = Message(key=job.image_id, value=job.encode(), headers={"request-id": job.request_id})
    try:
        await queue.publish(kafka.jobs_topic, message)
    except QueueUnavailable:
        JOBS_PUBLISHED.labels("error").inc()
        raise
    JOBS_PUBLISHED.labels("ok").inc()
