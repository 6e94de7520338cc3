"""Resume after a crash: ``pinhole import`` killed with SIGKILL half-way, then
run again, settles every file exactly once and skips what its journal holds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinhole.app.wiring import build_blob_store
from pinhole.domain.keys import manifest_key, original_key
from pinhole.ports import BlobStore
from tests.support.importer import (
    SourceFile,
    image_id_of,
    import_command,
    journal_keys,
    run_import_process,
    small_photos,
    stack,
    write_tree,
)
from tests.support.services import MotoS3, TansuBroker

pytestmark = pytest.mark.slow

FILES = 40
KILL_AFTER = 5


@pytest.fixture
async def dest(moto_s3: MotoS3, unique_name: str) -> AsyncIterator[BlobStore]:
    store = build_blob_store(moto_s3.url(unique_name))
    yield store
    await store.close()


def kill_mid_way(command: list[str], env: dict[str, str], cwd: Path, journal: Path) -> int:
    """Start the import, SIGKILL it once its journal holds KILL_AFTER keys."""
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and len(journal_keys(journal)) >= KILL_AFTER:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    return proc.returncode


async def test_sigkill_then_rerun_settles_everything_once(
    tmp_path: Path,
    moto_s3: MotoS3,
    tansu: TansuBroker,
    unique_name: str,
    dest: BlobStore,
) -> None:
    images = small_photos(FILES)
    files = [SourceFile(f"d{i % 4}/{i:03d}.jpg", data) for i, data in enumerate(images)]
    source = tmp_path / "src"
    write_tree(source, files)
    env = stack(moto_s3, tansu, unique_name)
    journal = tmp_path / "import.journal"
    args = ["--journal", str(journal), "--concurrency", "1"]

    returncode = kill_mid_way(import_command(str(source), *args), env, tmp_path, journal)

    assert returncode == -signal.SIGKILL, "the import ended before it could be killed"
    done_before = journal_keys(journal)
    assert KILL_AFTER <= len(done_before) < FILES

    status, summary, stderr = run_import_process(str(source), env, tmp_path, *args)

    assert status == 0, stderr
    assert summary["skipped"] == len(done_before)
    # A file stored but not journaled before the kill is simply redone (its
    # manifest is still pending, so it counts as imported, not as a duplicate).
    assert summary["imported"] == FILES - len(done_before)
    assert (summary["duplicates"], summary["rejected"], summary["failed"]) == (0, {}, {})
    keys = journal_keys(journal)
    assert sorted(keys) == sorted(f.path for f in files)  # each exactly once
    assert keys[: len(done_before)] == done_before  # the first run's lines kept
    for data in images:
        image_id = image_id_of(data)
        assert await dest.head(original_key(image_id)) is not None
        assert await dest.head(manifest_key(image_id)) is not None
    assert len([i async for i in dest.list("originals/")]) == FILES
