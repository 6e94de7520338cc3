"""``pinhole import SOURCE``: bulk ingest of an existing folder or bucket of images.

Each file takes the road an HTTP upload takes (``ingest.accept``): spooled to
a temp file while hashed, the same checks and limits, the original stored
content-addressed, a pending marker and manifest, a transcode job on the
configured queue. So an import cannot let in what an upload would refuse, and
re-importing is harmless: the same bytes are the same image.

Resumable: a journal (one JSON line per source key, appended when the key is
settled) lets a rerun after a crash skip what is done. A key that failed for a
transient reason (storage or broker down, a source read error) is not
journaled, so the rerun tries it again; a file the checks refused is, since it
would be refused again.

With an in-process queue (``memory://``, the ``pinhole up`` default) no
transcoder could ever see the jobs, so the import runs one itself, in this
process, and waits for it to finish the jobs before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit, urlunsplit

from ingest.accept import check_spooled, enqueue_admitted, store_original
from ingest.spool import Spool
from ingest.validate import check_type
from pinhole.app.bounded import for_each
from pinhole.app.progress import Progress
from pinhole.domain.ids import ImageId
from pinhole.errors import (
    ObjectNotFound,
    PayloadTooLarge,
    PinholeError,
    QueueUnavailable,
    ServiceUnavailable,
    StorageUnavailable,
    TransientError,
)
from pinhole.ports import BlobStore, JobQueue
from pinhole.retry import retry_transient
from pinhole.settings import Settings

log = logging.getLogger("pinhole.import")

REQUEST_ID = "import"
CHUNK_BYTES = 1024 * 1024
DEFAULT_CONCURRENCY = 4
# Tries per storage or broker step before a file counts as failed (transient).
_ATTEMPTS = 4
_EXAMPLES = 3
_DRAIN_POLL_SECONDS = 0.2

IMPORTED = "imported"
DUPLICATE = "duplicate"
REJECTED = "rejected"
FAILED = "failed"
SKIPPED = "skipped"

# Failure codes of our own, beside the ingest ones.
SOURCE_UNREADABLE = "source-unreadable"
QUEUE_UNAVAILABLE = "queue-unavailable"
INTERNAL_ERROR = "internal-error"

T = TypeVar("T")


# --- Sources -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One file of the source: its key (a relative path, or an object key) and size."""

    key: str
    size: int


class ImportSource(Protocol):
    label: str

    async def entries(self) -> list[Entry]:
        """Every file, in a stable order."""
        ...

    def chunks(self, key: str) -> AsyncIterator[bytes]:
        """The file's bytes; ``OSError``/``ObjectNotFound``/``TransientError`` if
        it cannot be read."""
        ...

    async def close(self) -> None: ...


class DirectorySource:
    """A local directory tree; keys are POSIX paths relative to its root."""

    def __init__(self, root: Path, *, exclude: Path | None = None) -> None:
        self.root = root
        self.label = str(root)
        self._exclude = exclude.resolve() if exclude is not None else None

    def _walk(self) -> list[Entry]:
        found: list[Entry] = []
        # Symlinked directories are not followed (no loops); symlinked files are read.
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory, name)
                if self._exclude is not None and path.resolve() == self._exclude:
                    continue
                try:
                    size = path.stat().st_size
                except OSError:
                    size = 0  # a dangling link: reading it reports the error
                found.append(Entry(path.relative_to(self.root).as_posix(), size))
        return found

    async def entries(self) -> list[Entry]:
        return await asyncio.to_thread(self._walk)

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self.root / key, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def close(self) -> None:
        return None


class StoreSource:
    """Objects under a prefix of a ``BlobStore`` (an S3 bucket, usually)."""

    def __init__(self, store: BlobStore, prefix: str, label: str) -> None:
        self.store = store
        self.prefix = prefix
        self.label = label

    async def entries(self) -> list[Entry]:
        return [
            Entry(info.key, info.size)
            async for info in self.store.list(self.prefix)
            if not info.key.endswith("/")  # "folder" placeholder objects
        ]

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        # The port reads an object whole. The importer only gets objects whose
        # listed size is within the upload limit, so memory stays bounded by
        # --concurrency x max_upload_bytes; the bytes are spooled and dropped.
        body = (await self.store.get(key)).body
        for start in range(0, len(body), CHUNK_BYTES):
            yield body[start : start + CHUNK_BYTES]

    async def close(self) -> None:
        await self.store.close()


def _source_store_url(parts: SplitResult) -> str:
    """``s3://bucket/prefix?...`` → the bucket's store URL, never creating it."""
    query = parse_qs(parts.query, keep_blank_values=True)
    query.setdefault("create", ["0"])
    return urlunsplit(("s3", parts.netloc, "", urlencode(query, doseq=True), ""))


def open_source(text: str, *, exclude: Path | None = None) -> ImportSource:
    """A local directory (a path or ``file://``), or ``s3://bucket/prefix?endpoint=...``."""
    if Path(text).is_dir():
        return DirectorySource(Path(text), exclude=exclude)
    parts = urlsplit(text)
    if parts.scheme == "file":
        path = Path(parts.netloc + parts.path)
        if path.is_dir():
            return DirectorySource(path, exclude=exclude)
        raise ValueError(f"{text} is not a directory")
    if parts.scheme == "s3":
        from pinhole.app.wiring import build_blob_store

        prefix = parts.path.lstrip("/")
        return StoreSource(build_blob_store(_source_store_url(parts)), prefix, text)
    raise ValueError(f"{text} is neither a directory nor an s3://bucket/prefix URL")


# --- Journal -----------------------------------------------------------------


def default_journal(source: str, storage: str) -> Path:
    """In the working directory, named for the source *and* the destination, so
    importing one folder into two stores keeps two journals. A directory is
    named by its absolute path, so ``photos`` and ``./photos/`` share one."""
    if Path(source).is_dir():
        source = str(Path(source).resolve())
    digest = hashlib.sha256(f"{source}\n{storage}".encode()).hexdigest()[:12]
    return Path(f"pinhole-import-{digest}.journal")


class Journal:
    """Append-only JSON lines of settled source keys.

    Each line is flushed to the OS as it is written, so a killed process
    (SIGKILL) loses nothing it wrote; a torn last line (power loss) is ignored
    on reading and fenced off by a newline before the next append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._lock = asyncio.Lock()

    def _read(self) -> set[str]:
        done: set[str] = set()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return done
        for line in text.splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                done.add(str(json.loads(line)["key"]))
        return done

    async def done_keys(self) -> set[str]:
        return await asyncio.to_thread(self._read)

    def _open(self) -> TextIO:
        f = self.path.open("a+", encoding="utf-8")
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(f.tell() - 1)
            last = f.read(1)
            f.seek(0, os.SEEK_END)
            if last != "\n":
                f.write("\n")
        return f

    def _append(self, line: str) -> None:
        if self._file is None:
            self._file = self._open()
        self._file.write(line)
        self._file.flush()

    async def record(self, key: str, result: str, code: str | None, image_id: str | None) -> None:
        line = json.dumps({"key": key, "result": result, "code": code, "id": image_id}) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)


# --- Report ------------------------------------------------------------------


@dataclass
class CodeTally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, key: str) -> None:
        # The first few in key order, not in completion order: the same source
        # gives the same summary whatever the concurrency.
        self.count += 1
        self.examples = sorted([*self.examples, key])[:_EXAMPLES]


@dataclass
class ImportReport:
    source: str
    storage: str
    journal: str | None
    dry_run: bool
    total: int = 0
    imported: int = 0
    duplicates: int = 0
    # Settled in an earlier run, per the journal.
    skipped: int = 0
    # Refused by the checks, by error code: importing them again would not help.
    rejected: dict[str, CodeTally] = field(default_factory=dict)
    # Not done for a reason that may heal (storage, broker, source read): rerun.
    failed: dict[str, CodeTally] = field(default_factory=dict)
    # With an in-process queue: images the in-process transcoder made ready.
    transcoded: int | None = None

    @property
    def rejected_count(self) -> int:
        return sum(t.count for t in self.rejected.values())

    @property
    def failed_count(self) -> int:
        return sum(t.count for t in self.failed.values())

    @property
    def exit_status(self) -> int:
        return 1 if self.failed_count else 0

    def as_json(self) -> dict[str, object]:
        def codes(tallies: dict[str, CodeTally]) -> dict[str, object]:
            return {
                code: {"count": t.count, "examples": t.examples}
                for code, t in sorted(tallies.items())
            }

        return {
            "source": self.source,
            "storage": self.storage,
            "journal": self.journal,
            "dry_run": self.dry_run,
            "total": self.total,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "rejected": codes(self.rejected),
            "rejected_total": self.rejected_count,
            "failed": codes(self.failed),
            "failed_total": self.failed_count,
            "transcoded": self.transcoded,
        }

    def text(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        lines = [
            f"import of {self.source} into {self.storage}: {self.total} files"
            + (" (dry run: nothing written)" if self.dry_run else ""),
            f"  {verb:<12} {self.imported}",
            f"  {'duplicates':<12} {self.duplicates}",
            f"  {'skipped':<12} {self.skipped}"
            + (f"  (done in an earlier run, journal {self.journal})" if self.journal else ""),
        ]
        for name, tallies in (("rejected", self.rejected), ("failed", self.failed)):
            lines.append(f"  {name:<12} {sum(t.count for t in tallies.values())}")
            for code, t in sorted(tallies.items()):
                lines.append(f"    {code:<24} {t.count:>6}  e.g. {', '.join(t.examples)}")
        if self.transcoded is not None:
            lines.append(f"  {'transcoded':<12} {self.transcoded} (in process)")
        if self.failed:
            lines.append(
                "Some files failed for a reason that may heal: run the same command again."
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    result: str  # IMPORTED, DUPLICATE, REJECTED or FAILED
    code: str | None = None
    image_id: ImageId | None = None


# --- The import --------------------------------------------------------------


class Importer:
    """Settles each entry of a source into the destination store and queue."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        queue: JobQueue,
        source: ImportSource,
        *,
        dry_run: bool,
        spool_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.source = source
        self.dry_run = dry_run
        self.spool_dir = spool_dir
        # Ids claimed in this run: a second copy inside the source is a duplicate
        # even while the first is still pending.
        self._claimed: set[ImageId] = set()

    async def _retry(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        return await retry_transient(operation, what=what, attempts=_ATTEMPTS)

    async def settle(self, entry: Entry) -> Outcome:
        try:
            return await self._settle(entry)
        except PinholeError as exc:
            return Outcome(REJECTED, exc.code)
        except QueueUnavailable:
            return Outcome(FAILED, QUEUE_UNAVAILABLE)
        except TransientError:
            return Outcome(FAILED, ServiceUnavailable.code)
        except Exception:
            # One odd file (or a bug) must not end a long import: count it, go on.
            log.exception("import: unexpected error", extra={"key": entry.key})
            return Outcome(FAILED, INTERNAL_ERROR)

    async def _settle(self, entry: Entry) -> Outcome:
        limits = self.settings.limits
        if entry.size > limits.max_upload_bytes:
            # Refused from its size alone, as ingest refuses a declared length.
            raise PayloadTooLarge(
                f"The upload exceeds the limit of {limits.max_upload_bytes} bytes."
            )
        spool = Spool(self.spool_dir)
        try:
            try:
                spooled = await spool.write_stream(
                    self.source.chunks(entry.key), limits.max_upload_bytes, check_type
                )
            except (OSError, ObjectNotFound, StorageUnavailable) as exc:
                log.warning(
                    "import: source unreadable", extra={"key": entry.key, "error": str(exc)}
                )
                return Outcome(FAILED, SOURCE_UNREADABLE)
            admitted = await self._retry(
                lambda: check_spooled(self.store, spooled, limits), "check"
            )
            if admitted.duplicate or admitted.image_id in self._claimed:
                return Outcome(DUPLICATE, image_id=admitted.image_id)
            self._claimed.add(admitted.image_id)
            if self.dry_run:
                return Outcome(IMPORTED, image_id=admitted.image_id)
            try:
                await self._retry(
                    lambda: store_original(self.store, spooled, admitted), "store original"
                )
            except BaseException:
                self._claimed.discard(admitted.image_id)  # let a later copy try
                raise
        finally:
            await spool.close()
        await self._retry(
            lambda: enqueue_admitted(
                self.store, self.queue, self.settings.kafka, admitted, REQUEST_ID
            ),
            "enqueue",
        )
        return Outcome(IMPORTED, image_id=admitted.image_id)


async def run_import(
    settings: Settings,
    source_text: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    journal_path: Path | None = None,
    dry_run: bool = False,
    progress_stream: TextIO | None = None,
) -> ImportReport:
    """Import every file of the source; the report says what became of each."""
    from pinhole.app.wiring import build_components

    journal_path = journal_path or default_journal(source_text, settings.storage)
    journal = Journal(journal_path)
    source = open_source(source_text, exclude=journal_path)
    components = build_components(settings)
    in_process = urlsplit(settings.queue).scheme == "memory"
    report = ImportReport(
        source=source.label,
        storage=settings.storage,
        journal=str(journal_path),
        dry_run=dry_run,
    )
    transcoding: _InProcessTranscoding | None = None
    try:
        entries = await source.entries()
        report.total = len(entries)
        done = await journal.done_keys()
        todo = [e for e in entries if e.key not in done]
        report.skipped = len(entries) - len(todo)
        if not dry_run:
            await components.queue.start()
            if in_process:
                transcoding = _InProcessTranscoding(settings, components)
                transcoding.start()
        importer = Importer(settings, components.store, components.queue, source, dry_run=dry_run)
        label = "import (dry run)" if dry_run else "import"
        progress = Progress(label, len(todo), stream=progress_stream or sys.stderr)

        async def handle(entry: Entry) -> None:
            outcome = await importer.settle(entry)
            _tally(report, entry.key, outcome)
            if outcome.result != FAILED and not dry_run:
                await journal.record(entry.key, outcome.result, outcome.code, outcome.image_id)
            progress.advance(tally=outcome.result)

        with progress:
            await for_each(todo, handle, concurrency)
        if transcoding is not None:
            report.transcoded = await transcoding.finish(progress_stream or sys.stderr)
            transcoding = None
    finally:
        if transcoding is not None:
            await transcoding.abort()
        await journal.close()
        await source.close()
        await components.close()
    log.info("import done", extra=report.as_json())
    return report


def _tally(report: ImportReport, key: str, outcome: Outcome) -> None:
    if outcome.result == IMPORTED:
        report.imported += 1
    elif outcome.result == DUPLICATE:
        report.duplicates += 1
    else:
        tallies = report.rejected if outcome.result == REJECTED else report.failed
        tallies.setdefault(outcome.code or INTERNAL_ERROR, CodeTally()).add(key)


class _InProcessTranscoding:
    """A transcoder on the in-process queue, for as long as the import runs.

    It consumes the jobs as the import publishes them, exactly as ``pinhole up``
    would; ``finish`` waits until every job is acknowledged, then stops it."""

    def __init__(self, settings: Settings, components: Any) -> None:
        from pinhole.app.runtime import build_transcoder
        from pinhole.queue.memory import MemoryJobQueue

        if not isinstance(components.queue, MemoryJobQueue):
            raise TypeError("in-process transcoding needs the memory:// queue")
        self.queue: MemoryJobQueue = components.queue
        self.kafka = settings.kafka
        self.transcoder = build_transcoder(settings, components)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.transcoder.run(), name="import-transcoder")

    def _acked(self) -> int:
        return self.queue.committed(self.kafka.jobs_topic, self.kafka.consumer_group)

    async def finish(self, stream: TextIO) -> int:
        total = len(self.queue.log(self.kafka.jobs_topic))
        with Progress("transcode", total, stream=stream) as progress:
            while (acked := self._acked()) < total:
                if self._task is not None and self._task.done():
                    self._task.result()  # the transcoder died: raise its error
                    raise RuntimeError("the in-process transcoder stopped early")
                progress.advance(acked - progress.done)
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
            progress.advance(acked - progress.done)
        await self.abort()
        return self.transcoder.rendered_jobs

    async def abort(self) -> None:
        self.transcoder.stop()
        if self._task is not None:
            task, self._task = self._task, None
            await task
