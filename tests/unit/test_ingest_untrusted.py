"""The ingest role blocks libvips's untrusted loaders before it handles a request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import pyvips
    from pinhole.app.runtime import build_ingest_app
    from pinhole.settings import Settings

    source = lambda: pyvips.Source.new_from_memory(b"1,2\\n3,4\\n")
    assert pyvips.Image.csvload_source(source()).width == 2  # allowed before
    build_ingest_app(Settings(storage="file:///nonexistent", queue="memory://"))
    try:
        pyvips.Image.csvload_source(source())
    except pyvips.Error:
        print("blocked")
    else:
        print("allowed")
    """
)


def test_building_the_ingest_app_blocks_untrusted_loaders() -> None:
    # A fresh interpreter: in this one another test may already have blocked them.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "blocked"
