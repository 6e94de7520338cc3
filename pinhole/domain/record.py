"""Records: one owner's use of an image, and the 64-bit ids that route them.

An image is content (``pinhole.domain.ids``); a record is an owner's name for it,
with metadata, an optional alias and a private flag. Two owners who upload the
same bytes get two records and share one image.

Record ids follow Pinterest's scheme: the id carries its virtual shard, so any
process routes a record to its shard server from the id alone, and every record
of an owner is on the owner's shard (a stable hash of the owner name), so listing
an owner is one query on one server. Layout, most significant bit first::

    0 | shard (12 bits, 4096 virtual shards) | milliseconds since 2025 (41) | 10 bits

The top bit is always 0, so an id fits a signed 64-bit integer everywhere
(SQLite's INTEGER, Java's long, a signed BIGINT). The milliseconds make ids of a
shard sort by creation time (newest last); the low bits start at a random value
per process and count up within a millisecond, so ids from one process never
repeat and ids from many processes rarely collide (a store retries a collision
with a fresh id: the id is the primary key). 41 bits of milliseconds last until
2094. In JSON an id is a decimal string: browsers lose integers past 2^53.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from pinhole.domain.ids import VIRTUAL_SHARDS, ImageId
from pinhole.errors import (
    InvalidAlias,
    InvalidCursor,
    InvalidMetadata,
    InvalidOwner,
    InvalidRecordId,
)

RecordId = NewType("RecordId", int)

SHARD_BITS = 12
TIME_BITS = 41
SEQUENCE_BITS = 10
LOCAL_BITS = TIME_BITS + SEQUENCE_BITS
# 2025-01-01T00:00:00Z in unix milliseconds.
EPOCH_MS = 1_735_689_600_000
MAX_RECORD_ID = (1 << (SHARD_BITS + LOCAL_BITS)) - 1
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
_TIME_MASK = (1 << TIME_BITS) - 1

MAX_METADATA_BYTES = 4096
MAX_NAME_LENGTH = 64
# Owners and aliases go into URL paths as they are: unreserved characters only,
# and never "." or ".." (a leading letter or digit).
_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
_DECIMAL_RE = re.compile(r"[1-9][0-9]{0,18}")

assert VIRTUAL_SHARDS == 1 << SHARD_BITS


def _check_name(text: object, error: type[InvalidOwner] | type[InvalidAlias], what: str) -> str:
    if not isinstance(text, str) or not _NAME_RE.fullmatch(text):
        shown = repr(text)[:80]
        raise error(
            f"{what} {shown} is not 1 to {MAX_NAME_LENGTH} URL-safe characters (letters, "
            "digits, '.', '_', '-') starting with a letter or digit"
        )
    return text


def validate_owner(owner: object) -> str:
    """``owner`` if it is a valid owner name, else ``InvalidOwner``."""
    return _check_name(owner, InvalidOwner, "owner")


def validate_alias(alias: object) -> str:
    """``alias`` if it is a valid alias, else ``InvalidAlias``."""
    return _check_name(alias, InvalidAlias, "alias")


def owner_shard(owner: str) -> int:
    """The owner's virtual shard: the first 12 bits of SHA-256 of the name.

    A cryptographic hash, not ``hash()``: it must be the same in every process
    and every release, or records would move shards."""
    digest = hashlib.sha256(owner.encode()).digest()
    return int.from_bytes(digest[:2], "big") >> (16 - SHARD_BITS)


def record_shard(record_id: int) -> int:
    """The virtual shard a record id carries."""
    return record_id >> LOCAL_BITS


def record_millis(record_id: int) -> int:
    """Unix milliseconds at which the id was made."""
    return ((record_id >> SEQUENCE_BITS) & _TIME_MASK) + EPOCH_MS


def make_record_id(shard: int, millis: int, sequence: int) -> RecordId:
    if not 0 <= shard < VIRTUAL_SHARDS:
        raise ValueError(f"shard {shard} is not in 0..{VIRTUAL_SHARDS - 1}")
    offset = millis - EPOCH_MS
    if not 0 <= offset <= _TIME_MASK:
        raise ValueError(f"time {millis} ms is outside the id's range")
    if not 0 <= sequence <= _SEQUENCE_MASK:
        raise ValueError(f"sequence {sequence} is not in 0..{_SEQUENCE_MASK}")
    return RecordId((shard << LOCAL_BITS) | (offset << SEQUENCE_BITS) | sequence)


class RecordIdGenerator:
    """Ids for one process: strictly increasing per shard, thread-safe.

    The low bits start at a random value for each (shard, millisecond) and count
    up from there; a burst of more than 1024 ids for one shard in one millisecond
    borrows the next millisecond (the id runs slightly ahead of the clock) rather
    than repeat."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()

    def new(self, shard: int, *, now_ms: int | None = None) -> RecordId:
        millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        candidate = make_record_id(shard, millis, secrets.randbelow(1 << (SEQUENCE_BITS - 1)))
        with self._lock:
            last = self._last.get(shard)
            if last is not None and candidate <= last:
                candidate = RecordId(last + 1)
                if record_shard(candidate) != shard:  # pragma: no cover - year 2094
                    raise ValueError(f"record ids of shard {shard} are exhausted")
            self._last[shard] = candidate
        return candidate


def format_record_id(record_id: int) -> str:
    """The id's JSON form: a decimal string."""
    if not 0 < record_id <= MAX_RECORD_ID:
        raise InvalidRecordId(f"{record_id} is not a record id")
    return str(record_id)


def parse_record_id(text: object) -> RecordId:
    """The id a decimal string names, else ``InvalidRecordId`` saying why.

    Strict: no sign, no leading zeros, no spaces, so each id has one spelling
    (one URL, one cache key)."""
    if not isinstance(text, str):
        raise InvalidRecordId(f"a record id is a string of digits, not {type(text).__name__}")
    if not _DECIMAL_RE.fullmatch(text):
        raise InvalidRecordId(
            f"record id {text[:40]!r} is not a decimal number without sign or leading zeros"
        )
    value = int(text)
    if value > MAX_RECORD_ID:
        raise InvalidRecordId(f"record id {text!r} is larger than 2^63 - 1")
    return RecordId(value)


def encode_metadata(metadata: object) -> str:
    """Metadata as stored: compact JSON of a JSON object, at most 4 KiB in UTF-8.

    Anything else (a list, a number, NaN, keys that are not strings, values JSON
    cannot hold) is ``InvalidMetadata``."""
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(f"metadata must be a JSON object, not {type(metadata).__name__}")
    try:
        text = json.dumps(
            dict(metadata), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMetadata(f"metadata is not JSON: {exc}") from None
    # json.dumps turns number keys into strings and tuples into lists: what is
    # stored must read back as what was given.
    if json.loads(text) != metadata:
        raise InvalidMetadata("metadata must use string keys and JSON values only")
    size = len(text.encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata is {size} bytes serialised; the limit is {MAX_METADATA_BYTES}"
        )
    return text


def decode_metadata(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):  # only encode_metadata writes it
        raise ValueError("stored metadata is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class Record:
    """One owner's use of an image. Times are unix microseconds (exact, so the
    listing's keyset on (created, id) compares equal what is equal)."""

    id: RecordId
    owner: str
    image_id: ImageId
    created_us: int
    updated_us: int
    metadata: dict[str, Any] = field(default_factory=dict)
    alias: str | None = None
    private: bool = False

    @property
    def shard(self) -> int:
        return record_shard(self.id)

    def to_json(self) -> dict[str, Any]:
        """The record as the API shows it: the id as a string, times in seconds."""
        return {
            "id": format_record_id(self.id),
            "owner": self.owner,
            "image_id": self.image_id,
            "metadata": self.metadata,
            "alias": self.alias,
            "private": self.private,
            "created": self.created_us / 1e6,
            "updated": self.updated_us / 1e6,
        }


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of a listing; ``cursor`` fetches the next (``None``: no more)."""

    records: list[Record]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class OwnerDeletion:
    """One batch of an owner's delete: how many records went, the images they
    named (for the sweep of images left with no record), and whether any are left."""

    removed: int
    image_ids: frozenset[ImageId]
    more: bool


def encode_cursor(created_us: int, record_id: int) -> str:
    """An opaque listing position: after the record (``created_us``, ``record_id``)."""
    raw = f"{created_us}.{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, RecordId]:
    """The position a cursor names, else ``InvalidCursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        created_text, _, id_text = raw.partition(".")
        created_us = int(created_text)
        record_id = parse_record_id(id_text)
    except (ValueError, InvalidRecordId):
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this listing handed out") from None
    if created_us < 0 or not created_text.isdigit():
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not one this listing handed out")
    return created_us, record_id


def now_us() -> int:
    return time.time_ns() // 1000
