"""Metric definitions (``definitions``), hot-path batching (``hot``), request
counting and the /metrics handler (``http``)."""
