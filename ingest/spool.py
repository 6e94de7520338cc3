"""Stream a request body to a spool file while hashing and counting it.

The body never sits in memory whole: chunks are batched into ~1 MiB writes
that run off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.sniff import SNIFF_BYTES
from pinhole.errors import PayloadTooLarge

_FLUSH_BYTES = 1024 * 1024
TAIL_BYTES = 64


@dataclass
class Spooled:
    path: Path
    size: int
    sha256: bytes
    head: bytes
    tail: bytes


class Spool:
    """An owned temp file; ``close`` deletes it."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._file: BinaryIO | None = None
        self.path: Path | None = None
        self.received = 0

    async def write_stream(
        self,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
        check_head: Callable[[bytes], object] | None = None,
    ) -> Spooled:
        """Spool every chunk. ``check_head`` sees the first ``SNIFF_BYTES`` as soon
        as they arrive and may raise to refuse the upload before the rest is read."""
        fd, name = await asyncio.to_thread(
            tempfile.mkstemp, prefix="pinhole-upload-", dir=self._directory
        )
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        digest = hashlib.sha256()
        size = 0
        head = b""
        tail = b""
        pending = bytearray()
        async for chunk in chunks:
            size += len(chunk)
            self.received = size
            if size > max_bytes:
                raise PayloadTooLarge(f"The upload exceeds the limit of {max_bytes} bytes.")
            digest.update(chunk)
            if len(head) < SNIFF_BYTES:
                head = (head + chunk)[:SNIFF_BYTES]
                if check_head is not None and len(head) == SNIFF_BYTES:
                    check_head(head)
            tail = (tail + chunk)[-TAIL_BYTES:]
            pending += chunk
            if len(pending) >= _FLUSH_BYTES:
                await asyncio.to_thread(self._file.write, bytes(pending))
                pending.clear()
        if check_head is not None and 0 < len(head) < SNIFF_BYTES:
            check_head(head)
        if pending:
            await asyncio.to_thread(self._file.write, bytes(pending))
        await asyncio.to_thread(self._file.flush)
        return Spooled(self.path, size, digest.digest(), head, tail)

    async def close(self) -> None:
        file, path = self._file, self.path
        self._file = self.path = None

        def cleanup() -> None:
            if file is not None:
                file.close()
            if path is not None:
                path.unlink(missing_ok=True)

        await asyncio.to_thread(cleanup)
