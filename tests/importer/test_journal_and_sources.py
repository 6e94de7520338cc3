"""The journal's crash tolerance and the parsing of SOURCE, without services."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinhole.app.importer import DirectorySource, Journal, StoreSource, default_journal, open_source
from storage.instrumented import InstrumentedBlobStore
from storage.s3 import S3BlobStore


async def test_a_torn_last_line_is_ignored_and_fenced_off(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text('{"key": "a", "result": "imported"}\n{"key": "b", "resu')
    journal = Journal(path)
    assert await journal.done_keys() == {"a"}

    await journal.record("c", "rejected", "undecodable-image", None)
    await journal.close()

    assert await Journal(path).done_keys() == {"a", "c"}
    assert path.read_text().splitlines()[-1].startswith('{"key": "c"')


async def test_directory_source_walks_recursively_and_skips_its_journal(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "y" / "deep.jpg").write_bytes(b"1")
    (tmp_path / "top.png").write_bytes(b"22")
    (tmp_path / "import.journal").write_text("")
    source = open_source(str(tmp_path), exclude=tmp_path / "import.journal")
    assert isinstance(source, DirectorySource)
    entries = await source.entries()
    assert [(e.key, e.size) for e in entries] == [("top.png", 2), ("x/y/deep.jpg", 1)]
    assert b"".join([c async for c in source.chunks("top.png")]) == b"22"


async def test_bucket_source_reads_the_prefix_and_never_creates_the_bucket() -> None:
    source = open_source(
        "s3://old-bucket/some/prefix/?endpoint=http://127.0.0.1:1&region=eu-west-1"
    )
    assert isinstance(source, StoreSource)
    assert source.prefix == "some/prefix/"
    assert isinstance(source.store, InstrumentedBlobStore)
    inner = source.store.inner
    assert isinstance(inner, S3BlobStore)
    assert (inner.bucket, inner.region, inner.create_bucket) == ("old-bucket", "eu-west-1", False)
    await source.close()


def test_unknown_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        open_source(f"file://{tmp_path}/missing")
    with pytest.raises(ValueError, match="neither a directory"):
        open_source("ftp://example.com/photos")
    with pytest.raises(ValueError, match="neither a directory"):
        open_source(str(tmp_path / "missing"))


def test_default_journal_depends_on_source_and_destination() -> None:
    a = default_journal("./photos", "s3://one")
    assert a == default_journal("./photos", "s3://one")
    assert a != default_journal("./photos", "s3://two")
    assert a.parent == Path(".")


def test_default_journal_names_a_directory_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    assert default_journal("photos", "s3://one") == default_journal(
        str(tmp_path / "photos") + "/", "s3://one"
    )
