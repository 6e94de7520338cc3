"""The one typed settings object.

Sources, strongest first: init kwargs, ``PINHOLE_*`` environment variables
(nested with ``__``, e.g. ``PINHOLE_LIMITS__MAX_PIXELS``), a TOML file named by
``PINHOLE_CONFIG``, then the defaults below. Backends are chosen by URL so that
moving from one machine to clusters is a configuration change, not a code change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Limits(BaseModel):
    """Bounds enforced before the expensive step each one guards."""

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=50_000_000, gt=0)
    max_width: int = Field(default=16_384, gt=0)
    max_height: int = Field(default=16_384, gt=0)
    max_frames: int = Field(default=1_000, gt=0)
    request_timeout_seconds: float = Field(default=60.0, gt=0)


class Transcode(BaseModel):
    """Encoder choices. Defaults keep a 2560x1600 ladder near a second on one core."""

    engine: Literal["vips"] = "vips"
    jpeg_quality: int = Field(default=80, ge=1, le=100)
    webp_quality: int = Field(default=78, ge=1, le=100)
    avif_quality: int = Field(default=52, ge=1, le=100)
    avif_effort: int = Field(default=2, ge=0, le=9)
    webp_effort: int = Field(default=4, ge=0, le=6)
    render_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)


class Kafka(BaseModel):
    """Topic names and producer options for the ``kafka://`` queue."""

    jobs_topic: str = "pinhole.jobs"
    events_topic: str = "pinhole.events"
    dead_letter_topic: str = "pinhole.jobs.dlq"
    consumer_group: str = "pinhole-transcoder"
    partitions: int = Field(default=12, gt=0)
    # Real Kafka supports it; the tansu test broker does not.
    idempotent_producer: bool = False


class Cache(BaseModel):
    """Hot-cache tier bounds: L1 is per process, L2 is the shared cache URL."""

    l1_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    max_object_bytes: int = Field(default=1024 * 1024, gt=0)
    ttl_seconds: int = Field(default=24 * 3600, gt=0)
    timeout_seconds: float = Field(default=0.25, gt=0)


class Auth(BaseModel):
    """Bearer tokens, stored as SHA-256 hex digests so the config holds no secret."""

    token_sha256: list[str] = Field(default_factory=list)
    # Only for `pinhole up` on a laptop: uploads and deletes need no token.
    allow_anonymous: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PINHOLE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    storage: str = "file://./var/pinhole"
    queue: str = "memory://"
    cache: str = "memory://"
    # Where clients reach the edge server; variant URLs in manifests start with it.
    public_url: str = "http://localhost:8080"
    # Where clients reach the ingest API (status URLs in upload replies).
    ingest_url: str = "http://localhost:8081"
    host: str = "127.0.0.1"
    edge_port: int = 8080
    ingest_port: int = 8081
    transcoder_port: int = 8082
    reconcile_after_seconds: float = Field(default=300.0, ge=0)
    log_level: str = "INFO"

    limits: Limits = Field(default_factory=Limits)
    transcode: Transcode = Field(default_factory=Transcode)
    kafka: Kafka = Field(default_factory=Kafka)
    hot_cache: Cache = Field(default_factory=Cache)
    auth: Auth = Field(default_factory=Auth)

    @property
    def status_base_url(self) -> str:
        return self.ingest_url.rstrip("/")

    @property
    def edge_base_url(self) -> str:
        return self.public_url.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PINHOLE_CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"PINHOLE_CONFIG names {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
