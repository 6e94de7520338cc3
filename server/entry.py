"""A cached variant: body plus the validators computed once when it left storage.

Packed as ``last_modified (f64) | etag digest (16 bytes) | body`` so every tier
(L1, Redis) stores one opaque byte string and no hash is recomputed per hit.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

_HEADER = struct.Struct(">d16s")


@dataclass(frozen=True, slots=True)
class Entry:
    last_modified: float
    digest: bytes
    # bytes, not a view into the packed form: aiohttp sends a bytes body with its
    # headers in one write, while any other buffer goes through its payload
    # machinery and a second write (measured: bench/edge, L1 path).
    body: bytes
    # The strong validator, made once per entry rather than per hit.
    etag: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", f'"{self.digest.hex()}"')

    @classmethod
    def from_body(cls, body: bytes, last_modified: float) -> Entry:
        digest = hashlib.blake2b(body, digest_size=16).digest()
        return cls(last_modified, digest, body)

    def size(self) -> int:
        """What it costs a byte-bounded cache: the body; the rest is small and fixed."""
        return len(self.body) + _HEADER.size

    def pack(self) -> bytes:
        return _HEADER.pack(self.last_modified, self.digest) + self.body

    @classmethod
    def unpack(cls, packed: bytes) -> Entry:
        last_modified, digest = _HEADER.unpack_from(packed)
        return cls(last_modified, digest, packed[_HEADER.size :])
