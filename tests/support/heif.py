"""HEIC/HEIF test inputs: real files fetched by `make test`
(scripts/fetch-heif-samples.sh) and HEICs encoded here with heif-enc (x265)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyvips

HEIF_DIR = Path(__file__).resolve().parents[2] / ".cache" / "heif-samples"


def heif_sample(name: str) -> bytes:
    path = HEIF_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `make test` (scripts/fetch-heif-samples.sh)"
        )
    return path.read_bytes()


def p3_profile() -> bytes:
    """libvips' built-in Display P3 ICC profile, as iPhones embed an equivalent one."""
    patch = pyvips.Image.black(1, 1, bands=3).copy(interpretation="srgb")
    return bytes(patch.icc_transform("p3", input_profile="srgb").get("icc-profile-data"))


def heif_enc(image: pyvips.Image, *options: str) -> bytes:
    """Encode ``image`` (with whatever ICC profile it carries) to HEIC with heif-enc."""
    binary = shutil.which("heif-enc")
    if binary is None:
        raise FileNotFoundError("heif-enc is missing: run `make test` (libheif-examples)")
    with tempfile.TemporaryDirectory() as work:
        source, out = Path(work, "in.png"), Path(work, "out.heic")
        image.pngsave(str(source), bitdepth=16 if image.format == "ushort" else 8)
        subprocess.run(
            [binary, *options, "-o", str(out), str(source)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return out.read_bytes()


# Display P3 values (8-bit, gamma-encoded): greys, skin, sky, foliage, and three
# saturated colours near or past the edge of sRGB, where an unmanaged P3 image
# looks most wrong.
P3_PATCHES: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (235, 235, 235),
    (30, 30, 30),
    (205, 150, 125),
    (90, 140, 200),
    (80, 130, 60),
    (230, 50, 40),
    (60, 200, 80),
    (40, 60, 210),
    (240, 210, 40),
)
PATCH = 48


@dataclass(frozen=True)
class Chart:
    heic: bytes
    # The raw P3 pixels (before encoding) and the patch count along the row.
    p3: pyvips.Image
    profile: bytes


def p3_chart() -> Chart:
    """A row of flat P3 patches, encoded losslessly (RGB, 4:4:4) to HEIC with a P3
    ICC profile, so the decode adds no error and the colours are exactly known."""
    patches = [
        pyvips.Image.black(PATCH, PATCH).new_from_image(list(rgb)).cast("uchar")
        for rgb in P3_PATCHES
    ]
    row = pyvips.Image.arrayjoin(patches, across=len(patches)).copy(interpretation="srgb")
    profile = p3_profile()
    tagged = row.copy()
    tagged.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    heic = heif_enc(tagged, "-L", "-p", "chroma=444", "--matrix_coefficients=0")
    return Chart(heic, row, profile)


def _patch_means(image: pyvips.Image) -> list[pyvips.Image]:
    """The centre of each patch, averaged, as a 1x1 sRGB image (so dE00 can compare)."""
    size = image.width / len(P3_PATCHES)
    means = []
    for i in range(len(P3_PATCHES)):
        left = round(i * size + size / 4)
        crop = image.crop(left, round(size / 4), round(size / 2), round(size / 2))
        rgb = [crop.extract_band(b).avg() for b in range(3)]
        means.append(pyvips.Image.black(1, 1).new_from_image(rgb).copy(interpretation="srgb"))
    return means


def chart_errors(rendered: bytes, chart: Chart, work: Path) -> tuple[list[float], list[float]]:
    """CIEDE2000 of each patch of ``rendered`` (a variant of the chart) against
    littleCMS's own conversion of the raw P3 values to sRGB (relative colorimetric,
    the profile read from a file); and, for scale, of the raw P3 values read as if
    they were sRGB (what an unmanaged pipeline would show)."""
    path = work / "p3.icc"
    path.write_bytes(chart.profile)
    reference = chart.p3.icc_transform("srgb", input_profile=str(path), intent="relative")
    out = pyvips.Image.new_from_buffer(rendered, "")
    got, want, unmanaged = _patch_means(out), _patch_means(reference), _patch_means(chart.p3)
    errors = [float(g.dE00(w).avg()) for g, w in zip(got, want, strict=True)]
    naive = [float(u.dE00(w).avg()) for u, w in zip(unmanaged, want, strict=True)]
    return errors, naive
