"""Fail the install if stock Pillow was pulled in over Pillow-SIMD."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

try:
    stock = version("pillow")
except PackageNotFoundError:
    stock = None
if stock is not None:
    sys.exit(f"stock Pillow {stock} is installed; it would shadow Pillow-SIMD")
print(f"Pillow-SIMD {version('pillow-simd')} installed")
