from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from pinhole.app.wiring import (
    UnsupportedBackend,
    build_blob_store,
    build_hot_cache,
    build_job_queue,
)
from pinhole.settings import CdnPurge, Settings


def test_defaults_are_the_embedded_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PINHOLE_STORAGE", "PINHOLE_QUEUE", "PINHOLE_CACHE", "PINHOLE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.storage, settings.queue, settings.cache) == (
        "file://./var/pinhole",
        "memory://",
        "memory://",
    )
    assert settings.limits.max_pixels == 50_000_000


def test_env_with_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINHOLE_QUEUE", "kafka://broker:9092")
    monkeypatch.setenv("PINHOLE_LIMITS__MAX_PIXELS", "1234")
    monkeypatch.setenv("PINHOLE_AUTH__TOKEN_SHA256", '["abc"]')
    settings = Settings()
    assert settings.queue == "kafka://broker:9092"
    assert settings.limits.max_pixels == 1234
    assert settings.auth.token_sha256 == ["abc"]


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pinhole.toml"
    config.write_text(
        'cache = "redis://r:6379/0"\nqueue = "kafka://a:1"\n[transcode]\navif_effort = 5\n'
    )
    monkeypatch.setenv("PINHOLE_CONFIG", str(config))
    monkeypatch.setenv("PINHOLE_QUEUE", "kafka://b:2")
    settings = Settings()
    assert settings.cache == "redis://r:6379/0"
    assert settings.queue == "kafka://b:2"
    assert settings.transcode.avif_effort == 5


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINHOLE_TRANSCODE__AVIF_EFFORT", "42")
    with pytest.raises(ValidationError):
        Settings()


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PINHOLE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_backends_are_chosen_by_url_scheme() -> None:
    settings = Settings()
    with pytest.raises(UnsupportedBackend):
        build_blob_store("ftp://x")
    with pytest.raises(UnsupportedBackend):
        build_job_queue("amqp://x", settings.kafka)
    with pytest.raises(UnsupportedBackend):
        build_hot_cache("memcached://x", settings.hot_cache)


def test_cdn_purge_caches_come_from_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINHOLE_CDN_PURGE__VARNISH_URLS", '["http://varnish:6081"]')
    monkeypatch.setenv("PINHOLE_CDN_PURGE__NGINX_URLS", '["http://cdn-a:8080", "https://cdn-b"]')
    settings = Settings()
    assert settings.cdn_purge.varnish_urls == ["http://varnish:6081"]
    assert settings.cdn_purge.nginx_urls == ["http://cdn-a:8080", "https://cdn-b"]
    assert settings.cdn_purge.configured
    assert not CdnPurge().configured


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({}, "no CDN caches configured"),
        ({"PINHOLE_CDN_PURGE__VARNISH_URLS": '["http://v:6081"]'}, "in-process queue"),
    ],
)
def test_cdn_purge_refuses_to_start_with_nothing_to_do(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], refusal: str
) -> None:
    """Purging nothing, or listening to a queue no other process publishes to,
    is a setting to fix: said at start, not discovered after a delete."""
    from pinhole.app import cli

    # The command sets up logging on the root logger; that stays with this test.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    for name in ("PINHOLE_QUEUE", "PINHOLE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=refusal):
        cli.main(["cdn-purge"])
