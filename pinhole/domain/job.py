"""The transcode job: one self-contained, versioned message keyed by image id."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pinhole.domain.ids import ImageId

JOB_VERSION = 1


class SourceInfo(BaseModel):
    """What ingest learned from the header; the transcoder trusts none of it for safety."""

    model_config = ConfigDict(frozen=True)

    format: str
    width: int = Field(gt=0)  # after EXIF orientation
    height: int = Field(gt=0)
    bytes: int = Field(ge=0)
    has_alpha: bool
    frames: int = Field(default=1, ge=1)

    @property
    def animated(self) -> bool:
        """Rendered with every frame (GIF and WebP with more than one)."""
        return self.frames > 1 and self.format in ("gif", "webp")


class TranscodeJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = JOB_VERSION
    image_id: ImageId
    original_key: str
    source: SourceInfo
    submitted_at: float
    request_id: str = ""
    # The image's focal point (x, y in 0..1) for cover presets of gravity
    # "focal". The manifest holds it; the transcoder copies it in from there
    # before rendering, so one set later (PATCH) is the one used.
    focal: tuple[float, float] | None = None

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> TranscodeJob:
        return cls.model_validate_json(data)
