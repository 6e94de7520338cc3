"""Perceptual similarity on libvips: SSIM of two images' luminance.

Used by the engine parity tests and by bench/transcode to pick quality
defaults by measurement. No extra dependency: the Gaussian windows of the
standard SSIM (sigma 1.5, Wang et al. 2004) are ``gaussblur`` on float images.
"""

from __future__ import annotations

import pyvips

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_SIGMA = 1.5


def _luminance(image: pyvips.Image) -> pyvips.Image:
    """Opaque on white, then the sRGB luma as float."""
    if image.hasalpha():
        image = image.flatten(background=255)
    if image.bands >= 3:
        image = image.colourspace("b-w")
    return image[0].cast("float")


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean SSIM of two same-sized images (1.0 means identical)."""
    if (a.width, a.height) != (b.width, b.height):
        raise ValueError(f"sizes differ: {a.width}x{a.height} vs {b.width}x{b.height}")
    x, y = _luminance(a), _luminance(b)

    def blur(image: pyvips.Image) -> pyvips.Image:
        return image.gaussblur(_SIGMA, precision="float")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    numerator = (mu_x * mu_y * 2 + _C1) * (cov * 2 + _C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)
    return float((numerator / denominator).avg())


def reference_resize(original: pyvips.Image, width: int) -> pyvips.Image:
    """The lossless reference a variant is scored against: the upright, 8-bit
    original resized to ``width`` (no resize when it is not wider)."""
    if width < original.width:
        original = original.thumbnail_image(width, height=10_000_000, size="down")
    return original
