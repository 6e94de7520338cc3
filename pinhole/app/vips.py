"""Process-wide libvips set-up, done once before any image is touched."""

from __future__ import annotations

import pyvips


def configure_vips(threads_per_op: int | None = None) -> None:
    # Only loaders that are fuzzed and considered safe against hostile input.
    pyvips.block_untrusted_set(True)
    # The operation cache would keep decoded pixels of unrelated uploads alive.
    pyvips.cache_set_max(0)
    if threads_per_op is not None:
        pyvips.concurrency_set(threads_per_op)
