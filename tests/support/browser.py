"""Real headless Chromium (Debian's /usr/bin/chromium, never a downloaded one):
where it is, how it is started, and the limits the browser suites run `pinhole up` with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import PinholeProcess

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: no sandbox (containers), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "browser"
# Small enough that a real 4 MB photo is refused with 413, big enough for the others.
UPLOAD_LIMIT_BYTES = 2_000_000
# The `pinhole up` that browsers use with one-time upload URLs: tokens configured
# (no dev mode), a signing key, and one page origin allowed by CORS.
UPLOAD_URLS_TOKEN = "browser-upload-urls-token"
UPLOAD_URLS_SIGNING_KEY = "browser-upload-urls-signing-key"


@dataclass
class UploadUrlsUp:
    """`pinhole up` with tokens (so no anonymous uploads) and upload URLs, and the
    ports of two other loopback origins: ``allowed_port``'s pages may upload with
    upload URLs (CORS), ``other_port``'s may not."""

    process: PinholeProcess
    allowed_port: int
    other_port: int

    @property
    def allowed_origin(self) -> str:
        return f"http://127.0.0.1:{self.allowed_port}"

    @property
    def other_origin(self) -> str:
        return f"http://127.0.0.1:{self.other_port}"
