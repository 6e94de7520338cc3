"""Blob store adapters behind ``pinhole.ports.BlobStore``.

``fs`` keeps objects in a local directory (one machine, dev, tests); ``s3`` talks
to S3 or MinIO. Each translates its own failures into ``pinhole.errors`` so that
services never see a vendor or ``OSError`` type.
"""
