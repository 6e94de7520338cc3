"""Pinhole: async image ingestion and serving pipeline."""

__version__ = "0.1.0"
