"""Real photographs (fetched by `make test`) and inputs derived from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyvips

PHOTOS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "photos"


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    # Upright dimensions, after EXIF orientation.
    width: int
    height: int
    has_alpha: bool
    # Some pixel is not opaque: every output format must keep the alpha channel.
    # (An all-opaque alpha band may be dropped by an encoder, which is fine.)
    transparent: bool = False


def _is_transparent(image: pyvips.Image) -> bool:
    return bool(image.hasalpha()) and image[image.bands - 1].min() < 255


def photo_path(name: str) -> Path:
    path = PHOTOS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make test` (scripts/fetch-photos.sh)")
    return path


def load_photo(name: str) -> Photo:
    data = photo_path(name).read_bytes()
    image = pyvips.Image.new_from_buffer(data, "")
    return Photo(
        name, data, image.width, image.height, bool(image.hasalpha()), _is_transparent(image)
    )


def rotated_with_exif(name: str, orientation: int = 6) -> Photo:
    """A real photo re-saved with EXIF orientation 6 (and so with EXIF to strip)."""
    source = pyvips.Image.new_from_file(str(photo_path(name)))
    # Store the pixels turned 90° anticlockwise; orientation 6 says "turn clockwise to view".
    stored = source.rot270().copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    stored.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "pinhole test")
    data = stored.write_to_buffer(".jpg", Q=90, keep="exif")
    return Photo(f"{name}-exif{orientation}", data, source.width, source.height, False)


def transparent_png(name: str, width: int = 900) -> Photo:
    """A real photo, cut to a circle with a truly transparent outside."""
    image = pyvips.Image.thumbnail(str(photo_path(name)), width)
    xy = pyvips.Image.xyz(image.width, image.height)
    cx, cy = image.width / 2, image.height / 2
    r = min(cx, cy)
    distance = ((xy[0] - cx) ** 2 + (xy[1] - cy) ** 2) ** 0.5
    alpha = (distance < r).ifthenelse(255, 0).cast("uchar")
    data = image.bandjoin(alpha).write_to_buffer(".png")
    return Photo(f"{name}-circle", data, image.width, image.height, True, True)


def upload_set() -> list[Photo]:
    """Three sizes and orientations (one over 4000 px wide), EXIF rotation, alpha."""
    return [
        load_photo("flow-5120x2880.jpg"),
        load_photo("flow-dark-720x1440-portrait.jpg"),
        load_photo("pastelhills-3200x2000.jpg"),
        rotated_with_exif("autumn-2560x1600.jpg"),
        load_photo("kay-dark-1080x1920-alpha.png"),
        transparent_png("autumn-2560x1600.jpg"),
    ]


def webp_of(name: str) -> Photo:
    """A real photo re-encoded as a plain lossy WebP (one ``VP8 `` chunk)."""
    image = pyvips.Image.new_from_file(str(photo_path(name)))
    data = image.write_to_buffer(".webp", Q=85, keep="none")
    return Photo(f"{name}.webp", data, image.width, image.height, False)


def truncated(photo: Photo, keep: float = 2 / 3) -> Photo:
    """``photo`` cut short. A WebP gets RIFF and chunk sizes that match the cut,
    so its header still parses and only decoding the pixels can fail."""
    size = int(len(photo.data) * keep) // 2 * 2
    data = bytearray(photo.data[:size])
    if data[:4] == b"RIFF" and data[12:16] == b"VP8 ":
        data[4:8] = (size - 8).to_bytes(4, "little")
        data[16:20] = (size - 20).to_bytes(4, "little")
    return Photo(f"{photo.name}-cut", bytes(data), photo.width, photo.height, photo.has_alpha)
