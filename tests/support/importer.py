"""Source folders and a runner for ``pinhole import`` as a real OS process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyvips

from pinhole.domain.ids import ImageId, image_id_from_digest
from tests.support import badinput
from tests.support.photos import photo_path
from tests.support.services import MotoS3, TansuBroker

# Refused by its size alone; the tests set the upload limit below it.
TEST_MAX_UPLOAD_BYTES = 6 * 1024 * 1024


def image_id_of(data: bytes) -> ImageId:
    return image_id_from_digest(hashlib.sha256(data).digest())


def import_env(storage: str, queue: str, topic_prefix: str) -> dict[str, str]:
    return {
        "PINHOLE_STORAGE": storage,
        "PINHOLE_QUEUE": queue,
        "PINHOLE_KAFKA__JOBS_TOPIC": f"{topic_prefix}.jobs",
        "PINHOLE_KAFKA__EVENTS_TOPIC": f"{topic_prefix}.events",
        "PINHOLE_KAFKA__DEAD_LETTER_TOPIC": f"{topic_prefix}.jobs.dlq",
        "PINHOLE_KAFKA__CONSUMER_GROUP": f"{topic_prefix}.transcoder",
        "PINHOLE_KAFKA__PARTITIONS": "2",
        "PINHOLE_LIMITS__MAX_UPLOAD_BYTES": str(TEST_MAX_UPLOAD_BYTES),
        "PINHOLE_LOG_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def stack(moto_s3: MotoS3, tansu: TansuBroker, name: str) -> dict[str, str]:
    return import_env(moto_s3.url(name), tansu.url, name)


def import_command(source: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pinhole.app.cli", "import", source, *args]


def run_import_process(
    source: str, env: dict[str, str], cwd: Path, *args: str
) -> tuple[int, dict[str, object], str]:
    """Run ``pinhole import --json`` to the end: exit status, summary, stderr."""
    proc = subprocess.run(
        import_command(source, "--json", *args),
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        timeout=300,
        check=False,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.stdout, f"no summary; exit {proc.returncode}:\n{stderr}"
    summary: dict[str, object] = json.loads(proc.stdout)
    return proc.returncode, summary, stderr


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the source root (the key the summary names)
    data: bytes
    code: str | None = None  # the error code it must be rejected with, if any


def small_photos(count: int, name: str = "autumn-2560x1600.jpg") -> list[bytes]:
    """``count`` distinct small JPEGs cut from a real photo."""
    image = pyvips.Image.thumbnail(str(photo_path(name)), 320).copy_memory()
    out = []
    for i in range(count):
        tile = image.crop(i % 40, i // 40, 200, 150)
        data: bytes = tile.write_to_buffer(".jpg", Q=80)
        out.append(data)
    assert len({image_id_of(d) for d in out}) == count
    return out


def hostile_files(prefix: str = "bad") -> list[SourceFile]:
    """Every hostile upload from tests/badinput whose bytes alone are refused
    (the one refused only for its Content-Type is a fine JPEG as a file), and a
    file over the upload limit."""
    files = []
    for i, h in enumerate(badinput.hostile_uploads()):
        if h.name == "image sent as text/plain":
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", h.name.lower()).strip("-")
        files.append(SourceFile(f"{prefix}/{i:02d}-{slug}.img", h.data, h.code))
    too_big = b"\xff\xd8\xff\xe0" + b"\x00" * TEST_MAX_UPLOAD_BYTES + b"\xff\xd9"
    files.append(SourceFile(f"{prefix}/too-big.jpg", too_big, "payload-too-large"))
    return files


def write_tree(root: Path, files: Sequence[SourceFile]) -> None:
    for f in files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)


def journal_keys(path: Path) -> list[str]:
    """The keys of the whole lines of a journal, in order (a torn line is skipped)."""
    keys = []
    for line in path.read_text().splitlines():
        try:
            keys.append(json.loads(line)["key"])
        except ValueError:
            continue
    return keys
