"""Real headless Chromium (Debian's /usr/bin/chromium, never a downloaded one):
where it is, how it is started, and the limits the browser suites run `pinhole up` with."""

from __future__ import annotations

from pathlib import Path

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
