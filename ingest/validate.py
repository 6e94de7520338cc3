"""The checks an upload passes before it is stored, cheapest first.

Each step guards the next, more expensive one: the type comes from magic
bytes alone (never the filename or Content-Type); a truncated or padded file
is refused from its last bytes; the container walk bounds metadata and
frames from block headers; only then does libvips open the header, still
without decoding a pixel, to check dimensions against the limits.
"""

from __future__ import annotations

from ingest.probe import probe_header
from ingest.sniff import InputFormat, looks_complete, sniff
from ingest.spool import Spooled
from ingest.structure import scan_structure
from pinhole.domain.job import SourceInfo
from pinhole.errors import EmptyBody, UndecodableImage, UnsupportedMediaType
from pinhole.settings import Limits

ACCEPTED_FORMATS = "JPEG, PNG, GIF, WebP, AVIF, HEIF"


def check_type(head: bytes) -> InputFormat:
    """Refuse anything that is not an accepted image format, from its first bytes."""
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedMediaType(
            f"The bytes are not an accepted image format ({ACCEPTED_FORMATS})."
        )
    return fmt


def validate(spooled: Spooled, limits: Limits) -> SourceInfo:
    """Blocking (file reads, libvips): call it from a worker thread."""
    if spooled.size == 0:
        raise EmptyBody()
    fmt = check_type(spooled.head)
    if not looks_complete(fmt, spooled.tail, spooled.size, spooled.head):
        raise UndecodableImage(
            f"The {fmt.value} file does not end where it should: it is truncated "
            "or has data appended."
        )
    scan_structure(spooled.path, fmt, spooled.size, limits)
    return probe_header(spooled.path, fmt, spooled.size, limits)
