"""Every metric object Pinhole exports, defined once, all ``pinhole_``-prefixed.

Label values are bounded: route templates (never raw paths), preset and format
names from the ladder, result words from a small fixed vocabulary.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

UPLOADS = Counter(
    "pinhole_uploads_total",
    "Upload requests by result (accepted, duplicate, or an error code)",
    ["result"],
)
UPLOAD_BYTES = Counter(
    "pinhole_upload_bytes_total", "Bytes received in upload bodies, by result", ["result"]
)
JOBS_PUBLISHED = Counter(
    "pinhole_jobs_published_total", "Transcode jobs published, by result", ["result"]
)
JOBS_PROCESSED = Counter(
    "pinhole_jobs_processed_total",
    "Transcode jobs finished, by result (ready, failed)",
    ["result"],
)
JOBS_RETRIED = Counter(
    "pinhole_jobs_retried_total", "Transient failures retried while processing a job"
)
JOBS_DEAD_LETTERED = Counter(
    "pinhole_jobs_dead_lettered_total", "Jobs sent to the dead-letter topic, by reason", ["reason"]
)
JOBS_IN_FLIGHT = Gauge("pinhole_jobs_in_flight", "Transcode jobs being processed now")
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
HTTP_REQUESTS = Counter(
    "pinhole_http_requests_total",
    "HTTP requests by service, route template, method and status",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "pinhole_http_request_seconds",
    "HTTP request latency by service and route template",
    ["service", "route"],
    buckets=_LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "pinhole_cache_requests_total",
    "Variant lookups by tier (l1, redis, storage) and result",
    ["tier", "result"],
)
BYTES_SERVED = Counter(
    "pinhole_bytes_served_total",
    "Variant body bytes sent, by the tier that supplied them",
    ["tier"],
)
STORAGE_OPS = Counter(
    "pinhole_storage_operations_total", "Blob store operations by op and result", ["op", "result"]
)
STORAGE_SECONDS = Histogram(
    "pinhole_storage_operation_seconds",
    "Blob store operation latency by op",
    ["op"],
    buckets=_LATENCY_BUCKETS,
)
