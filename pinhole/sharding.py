"""The storage shard map: which store holds each of the 4096 virtual shards.

An image id carries its shard (its first three hex characters, see
``pinhole.domain.ids.shard_of``) and every storage key carries the id, so a
process routes any read or write from the key alone with this map: no lookup
table. Settings seed the map; the live map is a small versioned JSON document
(``pinhole.domain.keys.SHARD_MAP_KEY``, in the "default" store) that
``pinhole migrate`` rewrites as a move of shards goes through its phases, and
that every process reloads every
``sharding.refresh_seconds``. See README "Sharding and migrations".
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, Protocol

from pinhole.domain.ids import VIRTUAL_SHARDS
from pinhole.domain.keys import SHARD_MAP_KEY
from pinhole.errors import ObjectNotFound
from pinhole.ports import ObjectInfo, StoredObject

DEFAULT_STORE = "default"
_HEX = frozenset("0123456789abcdef")

# copying: writes and deletes go to both stores, reads to the source.
# flipped: reads from the target, writes still to both (a lagging process that
#          still reads the source sees every write).
# cleaning: the target owns the shards alone; the source copies are deleted.
Phase = Literal["copying", "flipped", "cleaning"]
PHASES: tuple[Phase, ...] = ("copying", "flipped", "cleaning")


class ControlStore(Protocol):
    """Where a live shard map, its migration's cursor and the migration lease are
    kept: a ``BlobStore`` (the blob map, in the "default" store's ``control/``
    prefix) or the record store's control table on its "default" server
    (``pinhole.records.control``). The subset of ``BlobStore`` they need:
    ``put`` with ``if_absent`` is the only atomic operation relied on."""

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool: ...

    async def get(self, key: str) -> StoredObject: ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]: ...


class ShardMapError(ValueError):
    """A shard range or map that cannot be used."""


def _parse_shard(text: str) -> int:
    if len(text) != 3 or not set(text) <= _HEX:
        raise ShardMapError(f"shard {text!r} is not three lowercase hex characters (000..fff)")
    return int(text, 16)


@dataclass(frozen=True, order=True)
class ShardRange:
    """Shards ``first..last``, both included."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> ShardRange:
        """``"800-fff"``, or one shard ``"abc"``."""
        low, dash, high = text.strip().partition("-")
        first = _parse_shard(low)
        last = _parse_shard(high) if dash else first
        if last < first:
            raise ShardMapError(f"shard range {text!r} ends before it starts")
        return cls(first, last)

    def __str__(self) -> str:
        return f"{self.first:03x}-{self.last:03x}"

    def __contains__(self, shard: object) -> bool:
        return isinstance(shard, int) and self.first <= shard <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1


def parse_ranges(ranges: Mapping[str, str], stores: Iterable[str]) -> dict[ShardRange, str]:
    """Validate ``{"000-7ff": "a", ...}``: hex ranges, no overlaps, known store names."""
    known = set(stores) | {DEFAULT_STORE}
    parsed = sorted((ShardRange.parse(text), name) for text, name in ranges.items())
    for (before, _), (after, _) in itertools.pairwise(parsed):
        if after.first <= before.last:
            raise ShardMapError(f"shard ranges {before} and {after} overlap")
    for shards, name in parsed:
        if name not in known:
            raise ShardMapError(f"shard range {shards} names store {name!r}, which is not defined")
    return dict(parsed)


def _compress(owners: list[str]) -> dict[ShardRange, str]:
    """Shard-by-shard owners back to the fewest ranges ("default" left implicit)."""
    out: dict[ShardRange, str] = {}
    start = 0
    for shard in range(1, VIRTUAL_SHARDS + 1):
        if shard == VIRTUAL_SHARDS or owners[shard] != owners[start]:
            if owners[start] != DEFAULT_STORE:
                out[ShardRange(start, shard - 1)] = owners[start]
            start = shard
    return out


@dataclass(frozen=True)
class Move:
    """Shards on their way from one store to another."""

    shards: ShardRange
    source: str
    target: str
    phase: Phase

    def to_json(self) -> dict[str, str]:
        return {
            "shards": str(self.shards),
            "from": self.source,
            "to": self.target,
            "phase": self.phase,
        }


@dataclass(frozen=True)
class Route:
    """Where one shard's objects are read from and written to (read store first)."""

    read: str
    writes: tuple[str, ...]


@dataclass(frozen=True)
class ShardMap:
    """Owners by range (unlisted shards live on "default") and moves under way."""

    ranges: dict[ShardRange, str] = field(default_factory=dict)
    moves: tuple[Move, ...] = ()
    version: int = 0

    @cached_property
    def _owners(self) -> list[str]:
        owners = [DEFAULT_STORE] * VIRTUAL_SHARDS
        for shards, name in self.ranges.items():
            owners[shards.first : shards.last + 1] = [name] * len(shards)
        return owners

    @cached_property
    def _routes(self) -> list[Route]:
        routes = [Route(name, (name,)) for name in self._owners]
        for move in self.moves:
            if move.phase == "copying":
                route = Route(move.source, (move.source, move.target))
            elif move.phase == "flipped":
                route = Route(move.target, (move.target, move.source))
            else:
                route = Route(move.target, (move.target,))
            routes[move.shards.first : move.shards.last + 1] = [route] * len(move.shards)
        return routes

    def owner(self, shard: int | None) -> str:
        """The store that owns ``shard`` by the map alone (``None``: no image)."""
        return DEFAULT_STORE if shard is None else self._owners[shard]

    def route(self, shard: int | None) -> Route:
        if shard is None:
            return Route(DEFAULT_STORE, (DEFAULT_STORE,))
        return self._routes[shard]

    def store_names(self) -> set[str]:
        names = {DEFAULT_STORE, *self.ranges.values()}
        for move in self.moves:
            names |= {move.source, move.target}
        return names

    def move_for(self, shards: ShardRange) -> Move | None:
        return next((m for m in self.moves if m.shards == shards), None)

    def moving(self, shard: int) -> Move | None:
        """The move under way that includes ``shard``, if any."""
        return next((m for m in self.moves if shard in m.shards), None)

    # --- Changes made by ``pinhole migrate``; each bumps the version. ---------

    def with_move(self, move: Move) -> ShardMap:
        others = tuple(m for m in self.moves if m.shards != move.shards)
        ranges = self.ranges
        if move.phase == "cleaning":
            # From here the target owns the shards by the map itself.
            owners = list(self._owners)
            owners[move.shards.first : move.shards.last + 1] = [move.target] * len(move.shards)
            ranges = _compress(owners)
        return ShardMap(ranges, (*others, move), self.version + 1)

    def without_move(self, shards: ShardRange) -> ShardMap:
        others = tuple(m for m in self.moves if m.shards != shards)
        return ShardMap(self.ranges, others, self.version + 1)

    # --- The control document. -------------------------------------------------

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "version": self.version,
            "map": {str(shards): name for shards, name in self.ranges.items()},
            "moves": [move.to_json() for move in self.moves],
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, body: bytes) -> ShardMap:
        try:
            doc = json.loads(body)
            ranges = {ShardRange.parse(k): str(v) for k, v in dict(doc["map"]).items()}
            moves = tuple(
                Move(
                    ShardRange.parse(str(m["shards"])),
                    str(m["from"]),
                    str(m["to"]),
                    _phase(str(m["phase"])),
                )
                for m in doc.get("moves", ())
            )
            version = int(doc["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardMapError(f"unreadable shard map document: {exc}") from exc
        parse_ranges({str(k): v for k, v in ranges.items()}, set(ranges.values()))
        return cls(ranges, moves, version)


def _phase(text: str) -> Phase:
    for phase in PHASES:
        if phase == text:
            return phase
    raise ShardMapError(f"unknown migration phase {text!r}")


def seed_map(ranges: Mapping[str, str], stores: Iterable[str]) -> ShardMap:
    """The map from settings, used until a control document exists."""
    return ShardMap(parse_ranges(ranges, stores))


def replace_phase(move: Move, phase: Phase) -> Move:
    return replace(move, phase=phase)


async def load_shard_map(control: ControlStore, seed: ShardMap) -> ShardMap:
    """The live map: the control document if there is one, else ``seed``."""
    try:
        stored = await control.get(SHARD_MAP_KEY)
    except ObjectNotFound:
        return seed
    return ShardMap.from_json(stored.body)


async def save_shard_map(control: ControlStore, shard_map: ShardMap) -> None:
    await control.put(SHARD_MAP_KEY, shard_map.to_json(), content_type="application/json")
