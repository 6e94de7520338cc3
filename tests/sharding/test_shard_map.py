"""The shard map: ranges, settings validation, routing by phase, the control document."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import ImageId
from pinhole.domain.keys import manifest_key, original_key, shard_of_key, variant_key
from pinhole.domain.ladder import PRESETS_BY_NAME, Format
from pinhole.settings import Settings
from pinhole.sharding import (
    Move,
    Route,
    ShardMap,
    ShardMapError,
    ShardRange,
    parse_ranges,
    seed_map,
)
from storage.instrumented import InstrumentedBlobStore
from storage.sharded import ShardedBlobStore

ID = ImageId("8a3f" + "0" * 28)


def test_every_key_of_an_image_carries_its_shard() -> None:
    from pinhole.domain.keys import pending_key

    keys = [
        original_key(ID),
        manifest_key(ID),
        pending_key(ID),
        variant_key(PRESETS_BY_NAME["236x"], ID, Format.AVIF),
    ]
    assert {shard_of_key(key) for key in keys} == {0x8A3}


@pytest.mark.parametrize(
    "key",
    [
        "control/shardmap.json",
        "k",
        "variants/236x/ab/cd/ef/abcdef.webp",  # not a whole id
        # A 32-hex name whose fan-out disagrees is not an image key.
        f"originals/00/00/00/{ID}",
        f"originals/{ID}",
    ],
)
def test_keys_without_an_image_have_no_shard(key: str) -> None:
    assert shard_of_key(key) is None


def test_shard_ranges() -> None:
    assert ShardRange.parse("800-fff") == ShardRange(0x800, 0xFFF)
    assert ShardRange.parse("abc") == ShardRange(0xABC, 0xABC)
    assert str(ShardRange(0, 0x7FF)) == "000-7ff"
    assert len(ShardRange.parse("000-fff")) == 4096
    assert 0x900 in ShardRange.parse("800-fff")
    assert 0x7FF not in ShardRange.parse("800-fff")
    for bad in ("80-fff", "800-ffff", "fff-800", "ABC", "xyz", "", "800-"):
        with pytest.raises(ShardMapError):
            ShardRange.parse(bad)


def test_parse_ranges_refuses_overlaps_and_unknown_stores() -> None:
    assert parse_ranges({"800-fff": "b", "000-0ff": "default"}, ["b"]) == {
        ShardRange(0, 0xFF): "default",
        ShardRange(0x800, 0xFFF): "b",
    }
    with pytest.raises(ShardMapError, match="overlap"):
        parse_ranges({"000-800": "b", "800-fff": "b"}, ["b"])
    with pytest.raises(ShardMapError, match="not defined"):
        parse_ranges({"800-fff": "c"}, ["b"])


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINHOLE_SHARDING__STORES", '{"b": "s3://bucket-b"}')
    monkeypatch.setenv("PINHOLE_SHARDING__MAP", '{"800-fff": "b"}')
    monkeypatch.setenv("PINHOLE_SHARDING__REFRESH_SECONDS", "0.5")
    settings = Settings()
    assert settings.sharding.stores == {"b": "s3://bucket-b"}
    assert settings.sharding.map == {"800-fff": "b"}
    assert settings.sharding.refresh_seconds == 0.5


def test_settings_from_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text('[sharding]\nstores = { b = "file:///srv/b" }\nmap = { "800-fff" = "b" }\n')
    monkeypatch.setenv("PINHOLE_CONFIG", str(config))
    assert Settings().sharding.map == {"800-fff": "b"}


@pytest.mark.parametrize(
    ("stores", "ranges"),
    [
        ('{"b": "file:///b"}', '{"800-fff": "c"}'),
        ('{"b": "file:///b"}', '{"000-900": "b", "800-fff": "default"}'),
        ('{"b": "file:///b"}', '{"80-fff": "b"}'),
        ('{"default": "file:///b"}', "{}"),
    ],
)
def test_settings_refuse_bad_maps(
    monkeypatch: pytest.MonkeyPatch, stores: str, ranges: str
) -> None:
    monkeypatch.setenv("PINHOLE_SHARDING__STORES", stores)
    monkeypatch.setenv("PINHOLE_SHARDING__MAP", ranges)
    with pytest.raises(ValidationError):
        Settings()


def test_a_sharded_store_is_built_only_for_several_stores(tmp_path: Path) -> None:
    settings = Settings(storage=f"file://{tmp_path / 'a'}")
    single = build_blob_store(settings.storage, settings.sharding)
    assert isinstance(single, InstrumentedBlobStore)
    assert not isinstance(single.inner, ShardedBlobStore)
    settings.sharding.stores = {"b": f"file://{tmp_path / 'b'}"}
    sharded = build_blob_store(settings.storage, settings.sharding)
    assert isinstance(sharded, InstrumentedBlobStore)
    assert isinstance(sharded.inner, ShardedBlobStore)
    assert set(sharded.inner.stores) == {"default", "b"}


def test_routes_follow_the_phases_of_a_move() -> None:
    base = seed_map({"000-3ff": "a"}, ["a", "b"])
    assert base.route(0x100) == Route("a", ("a",))
    assert base.route(0x900) == Route("default", ("default",))
    assert base.route(None) == Route("default", ("default",))

    shards = ShardRange.parse("800-fff")
    copying = base.with_move(Move(shards, "default", "b", "copying"))
    assert copying.route(0x900) == Route("default", ("default", "b"))
    assert copying.route(0x7FF) == Route("default", ("default",))
    flipped = copying.with_move(Move(shards, "default", "b", "flipped"))
    assert flipped.route(0x900) == Route("b", ("b", "default"))
    cleaning = flipped.with_move(Move(shards, "default", "b", "cleaning"))
    assert cleaning.route(0x900) == Route("b", ("b",))
    assert cleaning.owner(0x900) == "b"
    done = cleaning.without_move(shards)
    assert done.route(0x900) == Route("b", ("b",))
    assert done.ranges == {ShardRange(0, 0x3FF): "a", ShardRange(0x800, 0xFFF): "b"}
    assert [m.version for m in (base, copying, flipped, cleaning, done)] == [0, 1, 2, 3, 4]


def test_the_control_document_round_trips() -> None:
    shard_map = seed_map({"000-3ff": "a"}, ["a"]).with_move(
        Move(ShardRange.parse("800-fff"), "default", "b", "flipped")
    )
    again = ShardMap.from_json(shard_map.to_json())
    assert again == shard_map
    assert again.route(0xABC) == Route("b", ("b", "default"))
    with pytest.raises(ShardMapError):
        ShardMap.from_json(b'{"version": 1, "map": {"zzz": "a"}}')
    with pytest.raises(ShardMapError):
        ShardMap.from_json(b"not json")
