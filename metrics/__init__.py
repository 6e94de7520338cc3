"""Metric definitions (``definitions``), the aiohttp middleware and the /metrics handler."""
