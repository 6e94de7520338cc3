"""A ``BlobStore`` in a local directory: one file per key.

Meant for a single machine (``pinhole up``, dev, tests). Readers must never see
a half-written object, so every write goes to a temp file in the destination
directory and is then published with one atomic syscall: ``os.replace`` for an
overwrite, ``os.link`` for ``if_absent`` (link fails if the name exists, which
makes content-addressed dedup race-free across threads and processes).

Each operation is one ``asyncio.to_thread`` call, so a slow disk stalls a worker
thread, never the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pinhole.errors import ObjectNotFound, StorageUnavailable
from pinhole.ports import ObjectInfo, StoredObject

TEMP_PREFIX = ".tmp-"

_COPY_BUFFER = 1024 * 1024

# Checked before ``mimetypes``: these are the types we write, and the platform
# table may not know them (``.avif`` is missing from Python 3.11's built-ins).
_CONTENT_TYPES = {
    ".avif": "image/avif",
    ".webp": "image/webp",
    ".json": "application/json",
}

# A private table with only Python's built-in mappings, so the answer does not
# depend on whichever /etc/mime.types the host happens to ship.
_MIME = mimetypes.MimeTypes()


def content_type_for_key(key: str) -> str:
    """The type we report for ``key``: we store no metadata beside the bytes."""
    suffix = os.path.splitext(key.rsplit("/", 1)[-1])[1].lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _encoding = _MIME.guess_type("x" + suffix, strict=False) if suffix else (None, None)
    return guessed or "application/octet-stream"


def _check_key(key: str) -> None:
    # Keys are built by our own code, but a key is a path here: refuse anything
    # that could leave the root or collide with our temp files.
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid blob key: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", "..") or part.startswith(TEMP_PREFIX):
            raise ValueError(f"invalid blob key: {key!r}")


@contextlib.contextmanager
def _unavailable(op: str, key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"fs {op} {key!r}: {exc.strerror or exc}") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(final: Path, fill: Callable[[BinaryIO], object], *, if_absent: bool) -> bool:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        with open(tmp, "xb") as out:
            fill(out)
            out.flush()
            # Without this a crash after the rename can publish an empty file.
            os.fsync(out.fileno())
        if if_absent:
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
        return True
    finally:
        # After a replace the temp name is gone; after a link it is a second name.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        last_modified=st.st_mtime,
        content_type=content_type_for_key(key),
    )


def _scan(root: Path, prefix: str) -> list[ObjectInfo]:
    # Start at the deepest directory the prefix names, so listing one shard
    # does not walk the whole store.
    base_dir, _, _ = prefix.rpartition("/")
    start = root / base_dir if base_dir else root
    found: list[ObjectInfo] = []
    stack = [start]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            key = Path(entry.path).relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                # Descend only where keys can still match the prefix.
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    stack.append(Path(entry.path))
                continue
            if not key.startswith(prefix):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we walked
            found.append(_info(key, st))
    # Code point order of str equals byte order of UTF-8: the order S3 lists in.
    found.sort(key=lambda info: info.key)
    return found


class FsBlobStore:
    """Objects as files under ``root``; content type is inferred from the key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_url(cls, url: str) -> FsBlobStore:
        """``file://./var/pinhole`` (relative) or ``file:///abs/path``."""
        scheme = "file://"
        if not url.startswith(scheme) or len(url) == len(scheme):
            raise ValueError(f"not a file:// storage URL: {url!r}")
        return cls(Path(url[len(scheme) :]))

    def __repr__(self) -> str:
        return f"FsBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        final = self._path(key)

        def run() -> bool:
            with _unavailable("put", key):
                return _publish(final, lambda out: out.write(body), if_absent=if_absent)

        return await asyncio.to_thread(run)

    async def put_file(
        self, key: str, path: Path, *, content_type: str, if_absent: bool = False
    ) -> bool:
        final = self._path(key)

        def run() -> bool:
            # Opened outside the translation: a missing source is the caller's
            # bug, not a storage outage, and must not be retried as one.
            with open(path, "rb") as src, _unavailable("put", key):
                return _publish(
                    final,
                    lambda out: shutil.copyfileobj(src, out, _COPY_BUFFER),
                    if_absent=if_absent,
                )

        return await asyncio.to_thread(run)

    async def get(self, key: str) -> StoredObject:
        target = self._path(key)

        def run() -> StoredObject:
            with _unavailable("get", key):
                try:
                    with open(target, "rb") as f:
                        st = os.fstat(f.fileno())
                        body = f.read()
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    raise ObjectNotFound(key) from None
            return StoredObject(info=_info(key, st), body=body)

        return await asyncio.to_thread(run)

    async def head(self, key: str) -> ObjectInfo | None:
        target = self._path(key)

        def run() -> ObjectInfo | None:
            with _unavailable("head", key):
                try:
                    st = target.stat()
                except (FileNotFoundError, NotADirectoryError):
                    return None
            if not stat.S_ISREG(st.st_mode):
                return None
            return _info(key, st)

        return await asyncio.to_thread(run)

    async def delete(self, key: str) -> None:
        target = self._path(key)

        def run() -> None:
            # Empty parent directories are left behind on purpose: removing
            # them would race with a concurrent put creating a file there.
            with (
                _unavailable("delete", key),
                contextlib.suppress(FileNotFoundError, NotADirectoryError),
            ):
                target.unlink()

        await asyncio.to_thread(run)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        if "\\" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"invalid blob prefix: {prefix!r}")

        def run() -> list[ObjectInfo]:
            with _unavailable("list", prefix):
                return _scan(self.root, prefix)

        for info in await asyncio.to_thread(run):
            yield info

    async def ping(self) -> None:
        def run() -> None:
            with _unavailable("ping", str(self.root)):
                self.root.mkdir(parents=True, exist_ok=True)
                if not os.access(self.root, os.W_OK | os.X_OK):
                    raise StorageUnavailable(f"fs root {str(self.root)!r} is not writable")

        await asyncio.to_thread(run)

    async def close(self) -> None:
        """Nothing is held open between operations."""
