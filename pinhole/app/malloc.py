"""Bound glibc's malloc arenas, once, before the process starts its threads.

glibc gives threads that allocate at the same time their own heap arenas, up to
eight per core, and memory freed into one arena is not reused by another.
libvips' workers and the transcoder's render threads allocate and free pixel
buffers of tens of MB each, so a transcoder's RSS grows far past what it uses:
the full ladder of three photos, three in flight, peaked at 1.26 to 1.45 GB with
glibc's default and at 0.64 to 0.83 GB with two arenas, at the same throughput
within noise (bench/transcode, the arena table).

The edge (``pinhole serve``) gets one: its renders are box-sized and a worker's
RSS is what bounds how many workers fit. bench/render, cold signed renders, one
arena against two: largest worker 182-189 MB against 210-211 MB (161 against
194 MB with the hot-cache tiers off), server CPU per render within noise
(42.1-43.8 against 40.7-44.2 ms).

``MALLOC_ARENA_MAX`` in the environment is the operator's choice, read by glibc
at start; it is left alone (``MALLOC_ARENA_MAX=0`` restores glibc's default).
"""

from __future__ import annotations

import ctypes
import os

DEFAULT_ARENAS = 2
EDGE_ARENAS = 1
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """``True`` if the limit was set; ``False`` off glibc or when the environment sets one."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to ask
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "malloc_trim"):  # not glibc (musl, macOS)
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
