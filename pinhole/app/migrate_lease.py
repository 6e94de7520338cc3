"""One ``pinhole migrate`` at a time, on any host: a lease in the control store.

Two migrations at once would both read, change and write the live shard map,
and one's change would be lost (a move's phase dropped while processes still
follow it). The control store offers create-if-absent and nothing like
compare-and-swap, so the lease is a sequence of generations,
``control/migrations/lease-<n>.json``, never deleted:

- **Taking it:** read the newest generation. If its holder is alive, refuse
  and name it. Otherwise create generation n+1 if absent: of two contenders,
  only one can.
- **Alive** means it was not released, and its heartbeat is younger than
  ``stale_seconds``. On this host a dead pid means not alive at once, so a
  killed migration can be rerun straight away.
- **Holding it:** the holder rewrites its own heartbeat every third of
  ``stale_seconds``, and checks that no newer generation exists. If one does,
  it stalled past ``stale_seconds`` and was taken over, so it must stop before
  it writes anything else.
- **Releasing it** marks the generation released. Generations stay, so a holder
  that was taken over always sees the newer one.

The control store is any ``pinhole.sharding.ControlStore``: ``pinhole migrate``
holds its lease in the blob store, ``pinhole db migrate`` in the record store's
control table. They rewrite different maps, so one of each may run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace

from pinhole.domain.keys import (
    MIGRATION_LEASE_PREFIX,
    migration_lease_generation,
    migration_lease_key,
)
from pinhole.errors import ObjectNotFound
from pinhole.sharding import ControlStore

_JSON = "application/json"


class LeaseHeld(RuntimeError):
    """Another migration holds the lease; the message names it."""


class LeaseLost(RuntimeError):
    """This migration stalled, and another took the lease over."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    what: str
    heartbeat: float
    released: bool = False

    @classmethod
    def me(cls, what: str) -> Holder:
        return cls(socket.gethostname(), os.getpid(), what, time.time())

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Holder:
        return cls(**json.loads(body))

    def alive(self, stale_seconds: float, now: float) -> bool:
        if self.released or now - self.heartbeat > stale_seconds:
            return False
        if self.host == socket.gethostname():  # a container has a hostname of its own
            return _pid_alive(self.pid)
        return True

    def describe(self, now: float) -> str:
        return (
            f"{self.what!r}, pid {self.pid} on {self.host}, alive {now - self.heartbeat:.0f}s ago"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


async def _newest(control: ControlStore) -> tuple[int, Holder | None]:
    # Zero-padded generations: key order, which list() gives, is generation order.
    keys = [info.key async for info in control.list(MIGRATION_LEASE_PREFIX)]
    if not keys:
        return 0, None
    newest = max(keys)
    generation = migration_lease_generation(newest)
    try:
        return generation, Holder.from_json((await control.get(newest)).body)
    except ObjectNotFound:  # listed, then gone: only a hand-made cleanup does that
        return generation, None


@dataclass
class Lease:
    control: ControlStore
    generation: int
    holder: Holder

    async def renew(self) -> None:
        """A fresh heartbeat; ``LeaseLost`` if a newer generation exists."""
        if await self.control.head(migration_lease_key(self.generation + 1)) is not None:
            raise LeaseLost(
                "another migration took the lease over while this one stalled; "
                "this one stops (rerun it once that one is done)"
            )
        self.holder = replace(self.holder, heartbeat=time.time())
        await self.control.put(
            migration_lease_key(self.generation), self.holder.to_json(), content_type=_JSON
        )

    async def release(self) -> None:
        released = replace(self.holder, released=True)
        await self.control.put(
            migration_lease_key(self.generation), released.to_json(), content_type=_JSON
        )


async def take_lease(control: ControlStore, what: str, stale_seconds: float) -> Lease:
    """The lease, or ``LeaseHeld`` naming the migration that holds it."""
    generation, holder = await _newest(control)
    now = time.time()
    if holder is not None and holder.alive(stale_seconds, now):
        raise LeaseHeld(
            f"another migration is running: {holder.describe(now)}. One migration "
            f"runs at a time; if that one is gone, its lease lapses {stale_seconds:.0f}s "
            "after its last heartbeat"
        )
    mine = Holder.me(what)
    if not await control.put(
        migration_lease_key(generation + 1), mine.to_json(), content_type=_JSON, if_absent=True
    ):
        raise LeaseHeld("another migration took the lease just now")
    return Lease(control, generation + 1, mine)


@contextlib.asynccontextmanager
async def holding_lease(
    control: ControlStore, what: str, stale_seconds: float
) -> AsyncIterator[Lease]:
    """Hold the lease around the body, renewing it; a lost lease cancels the
    body and raises ``LeaseLost`` from it."""
    lease = await take_lease(control, what, stale_seconds)
    body = asyncio.current_task()
    assert body is not None
    lost: list[LeaseLost] = []

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(stale_seconds / 3)
            try:
                await lease.renew()
            except LeaseLost as exc:
                lost.append(exc)
                body.cancel()
                return
            except Exception:  # a storage blip: the next beat tries again
                continue

    beating = asyncio.create_task(heartbeat(), name="migrate-lease")
    try:
        yield lease
    except asyncio.CancelledError:
        if lost:
            body.uncancel()  # the cancel was ours, and it is now this error
            raise lost[0] from None
        raise
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        if not lost:
            with contextlib.suppress(Exception):  # it lapses by itself anyway
                await lease.release()
