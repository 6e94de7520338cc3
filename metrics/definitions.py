"""Every metric object Pinhole exports, defined once, all ``pinhole_``-prefixed.

Label values are bounded: route templates (never raw paths), preset and format
names from the ladder, result words and error codes from small fixed
vocabularies, partition numbers of a configured topic.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (several edge
worker processes on one host), every process writes its values to files there
and any process's ``/metrics`` reports the sum. Gauges therefore say how their
per-process values combine (``multiprocess_mode``). The directory must be
emptied before the processes start, as prometheus-client requires.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_DIR:
    # prometheus-client writes the first value files as the metrics below are defined.
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

# Ingest.
UPLOADS = Counter(
    "pinhole_uploads_total",
    "Upload requests by result (accepted, duplicate, or an error code)",
    ["result"],
)
UPLOAD_BYTES = Counter(
    "pinhole_upload_bytes_total", "Bytes received in upload bodies, by result", ["result"]
)
UPLOAD_URLS_CREATED = Counter(
    "pinhole_upload_urls_created_total",
    "POST /v1/upload-urls requests by result (created, or an error code)",
    ["result"],
)
UPLOAD_URL_USES = Counter(
    "pinhole_upload_url_uses_total",
    "Uploads with a one-time upload URL by result (accepted, duplicate, or an error "
    "code: upload-url-used, upload-url-expired, upload-url-invalid, ...)",
    ["result"],
)
URL_FETCHES = Counter(
    "pinhole_url_fetches_total",
    "Server-side fetches of upload by URL, by result (fetched, or an error code: "
    "url-address-not-allowed, url-fetch-failed, payload-too-large, ...)",
    ["result"],
)
JOBS_PUBLISHED = Counter(
    "pinhole_jobs_published_total", "Transcode jobs published, by result (ok, error)", ["result"]
)

# Transcoder.
JOBS_PROCESSED = Counter(
    "pinhole_jobs_processed_total",
    "Transcode jobs finished, by result: ready (rendered), failed (dead-lettered), "
    "skipped (a duplicate job of an image already ready, failed or deleted)",
    ["result"],
)
for _result in ("ready", "failed", "skipped"):
    JOBS_PROCESSED.labels(_result)
JOBS_RETRIED = Counter(
    "pinhole_jobs_retried_total", "Transient failures retried while processing a job"
)
JOBS_DEAD_LETTERED = Counter(
    "pinhole_jobs_dead_lettered_total",
    "Jobs sent to the dead-letter topic, by reason (an error code)",
    ["reason"],
)
JOBS_IN_FLIGHT = Gauge(
    "pinhole_jobs_in_flight", "Transcode jobs being processed now", multiprocess_mode="livesum"
)
TRANSCODE_SECONDS = Histogram(
    "pinhole_transcode_seconds",
    "Seconds to render and encode one variant",
    ["preset", "format"],
    buckets=_JOB_BUCKETS,
)
UPLOAD_TO_READY_SECONDS = Histogram(
    "pinhole_upload_to_ready_seconds",
    "Seconds from accepted upload to ready manifest",
    buckets=_JOB_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "pinhole_consumer_lag",
    "Messages not yet committed by this consumer group: log end offset minus committed offset",
    ["topic", "partition"],
    # A partition has one owner at a time; the latest writer is the current owner.
    multiprocess_mode="livemostrecent",
)

# Every HTTP role.
HTTP_REQUESTS = Counter(
    "pinhole_http_requests_total",
    "HTTP requests by service, route template, method and status",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "pinhole_http_request_seconds",
    "HTTP request latency by service, route template and status",
    ["service", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_ERRORS = Counter(
    "pinhole_http_errors_total",
    "Error responses by service and stable error code (the JSON body's error.code)",
    ["service", "code"],
)

# Edge.
CACHE_REQUESTS = Counter(
    "pinhole_cache_requests_total",
    "Variant lookups by tier (l1, redis, storage) and result (hit, miss, error)",
    ["tier", "result"],
)
BYTES_SERVED = Counter(
    "pinhole_bytes_served_total",
    "Variant body bytes sent, by the tier that supplied them",
    ["tier"],
)
# Manifests an edge read that another preset table rendered (server.facts.PresetWatch):
# roles configured with different presets. Not labelled by fingerprint (unbounded).
PRESET_MISMATCHES = Counter(
    "pinhole_preset_mismatches_total",
    "Manifests read by an edge whose preset fingerprint is not this edge's",
)
RENDERS_ON_THE_FLY = Counter(
    "pinhole_renders_on_the_fly_total",
    "Missing variants of ready images rendered at request time, by preset and format",
    ["preset", "format"],
)

# Rate limits (pinhole.rate_limits), ingest and edge. Limits are a fixed set of
# policies ("uploads-per-token", ..., "renders-per-address"), never a subject.
RATE_LIMIT_REQUESTS = Counter(
    "pinhole_rate_limit_requests_total",
    "Requests checked against a rate limit, by limit and outcome: allowed, limited "
    "(answered 429 rate-limit-exceeded), failed-open (the counters' store did not "
    "answer, so the request went through uncounted)",
    ["limit", "outcome"],
)

# Storage quotas per owner (ingest.quota). ``stage`` is where the upload was
# held: declared (its headers, before the body), received (its real size, before
# it is stored), commit (the record store's atomic check, racing uploads of one
# owner). Never an owner: owners are unbounded.
QUOTA_REFUSALS = Counter(
    "pinhole_quota_refusals_total",
    "Uploads and records refused 403 quota-exceeded, by quota (bytes, images) and stage "
    "(declared, received, commit)",
    ["quota", "stage"],
)

# Storage, any adapter.
STORAGE_OPS = Counter(
    "pinhole_storage_operations_total", "Blob store operations by op and result", ["op", "result"]
)
STORAGE_SECONDS = Histogram(
    "pinhole_storage_operation_seconds",
    "Blob store operation latency by op and result",
    ["op", "result"],
    buckets=_LATENCY_BUCKETS,
)

# Ingest hardening: deletes and reconcile.
IMAGE_DELETES = Counter(
    "pinhole_image_deletes_total",
    "DELETE /v1/images/{id} requests by result (deleted, not-found, or an error code)",
    ["result"],
)
PENDING_OLDEST_SECONDS = Gauge(
    "pinhole_pending_oldest_seconds",
    "Age of the oldest upload still pending, in seconds, as of the last reconcile pass "
    "(0 when nothing is pending)",
    # Every transcoder sees the same pending index: the largest is the truth.
    multiprocess_mode="livemax",
)
PENDING_IMAGES = Gauge(
    "pinhole_pending_images",
    "Uploads still pending (accepted, not yet ready or failed) at the last reconcile pass",
    multiprocess_mode="livemax",
)
RECONCILE_ITEMS = Counter(
    "pinhole_reconcile_items_total",
    "Pending uploads examined by reconcile, by outcome (requeued, cleaned, too-recent, failed)",
    ["outcome"],
)

# CDN purger (pinhole cdn-purge).
CDN_PURGES = Counter(
    "pinhole_cdn_purges_total",
    "Deleted images purged from one CDN cache, by outcome (purged, unavailable, refused)",
    ["outcome"],
)

# Webhooks (pinhole webhooks). Endpoints are named in settings: a bounded label.
WEBHOOK_DELIVERIES = Counter(
    "pinhole_webhook_deliveries_total",
    "Webhook delivery attempts by endpoint and result (delivered, failed: an attempt "
    "that will be retried or dead-lettered, dead_lettered: given up on)",
    ["endpoint", "result"],
)
WEBHOOK_SECONDS = Histogram(
    "pinhole_webhook_attempt_seconds",
    "One webhook POST, by endpoint",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)


def forget_partition_lag(topic: str, partition: int) -> None:
    """Stop reporting lag for a partition this process no longer owns.

    Zeroed first: in multiprocess mode the newest value wins and series cannot
    be removed, so the new owner's next report replaces this zero.
    """
    CONSUMER_LAG.labels(topic, str(partition)).set(0)
    if not _MULTIPROC_DIR:
        CONSUMER_LAG.remove(topic, str(partition))
