"""The embedded record store: one SQLite file, one shard server, nothing to install.

stdlib ``sqlite3`` on one dedicated thread (a single-worker executor that owns
the one connection), so no SQLite call ever blocks the event loop, and an
``asyncio.Lock`` so that one transaction's statements never interleave with
another's on that connection. WAL mode lets other processes (``pinhole db
upgrade``, a second ``pinhole up``) read while this one writes; ``busy_timeout``
makes a writer wait for another process's write rather than fail at once.

The schema is applied when the file is first opened: the embedded store has no
operator to run ``pinhole db upgrade`` (which works on it too, and finds nothing
left to do).

aiosqlite was the other choice: it is the same design (one thread per
connection) behind a wider API, and one more dependency for what a few lines
of ``run_in_executor`` do here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pinhole.domain.record import now_us
from pinhole.errors import RecordStoreUnavailable
from pinhole.records.schema import MIGRATIONS, VERSION_TABLE, UpgradeResult
from pinhole.records.sql import ALIAS_INDEX, PRIMARY, DuplicateKey, SqlRecordStore, Tx

_T = TypeVar("_T")


def path_from_url(url: str) -> Path:
    """``sqlite:///./var/records.db`` (relative), ``sqlite:////srv/records.db`` (absolute)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(
            f"a SQLite record store URL is sqlite:///relative/path or sqlite:////absolute/path, "
            f"not {url!r}"
        )
    path = unquote(parts.path[1:])
    if not path or path.endswith("/"):
        raise ValueError(f"the SQLite record store URL {url!r} names no file")
    return Path(path)


def _index_of(exc: sqlite3.IntegrityError) -> str:
    """The unique index an insert or update hit: "PRIMARY" for the id."""
    if exc.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY":
        return PRIMARY
    text = str(exc)
    if "records.owner, records.alias" in text:
        return ALIAS_INDEX
    return text


class _SqliteTx:
    for_update = ""
    for_share = ""

    def __init__(self, store: SqliteRecordStore) -> None:
        self._store = store

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return await self._store._on_thread(
            lambda conn: conn.execute(sql.replace("%s", "?"), tuple(params)).fetchall()
        )

    async def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        await self._store._on_thread(
            lambda conn: conn.execute(sql.replace("%s", "?"), tuple(params))
        )

    async def lock(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already serialises every writer."""


class SqliteRecordStore(SqlRecordStore):
    """``RecordStore`` in one SQLite file. ``timeout_seconds`` bounds each call,
    waiting for another process's write included."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, name: str = "default", timeout_seconds: float = 5.0) -> None:
        super().__init__(name)
        self.path = path
        self._timeout = timeout_seconds
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"pinhole-sqlite-{name}")
        self._conn: sqlite3.Connection | None = None
        self._schema_ready = False
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, name: str = "default", timeout_seconds: float = 5.0
    ) -> SqliteRecordStore:
        return cls(path_from_url(url), name=name, timeout_seconds=timeout_seconds)

    def __repr__(self) -> str:
        return f"SqliteRecordStore({str(self.path)!r})"

    # --- On the store's thread. --------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._open()
        if not self._schema_ready:
            _upgrade(conn)
            self._schema_ready = True
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are the explicit BEGINs below.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._timeout)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL with synchronous=NORMAL: durable across a process crash; a
                # power cut may lose the last transactions, never corrupt the file.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.rollback()

    async def _on_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise RuntimeError("the record store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    # --- SqlRecordStore. ---------------------------------------------------

    async def _transaction(
        self, shard: int | None, body: Callable[[Tx], Awaitable[_T]], *, write: bool
    ) -> _T:
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            async with asyncio.timeout(self._timeout), self._lock:
                try:
                    await self._on_thread(lambda conn: conn.execute(begin))
                    result = await body(_SqliteTx(self))
                    await self._on_thread(lambda conn: conn.execute("COMMIT"))
                except BaseException:
                    # Queued behind whatever statement is still running on the
                    # thread (a deadline does not stop it), before the next
                    # transaction's BEGIN: the executor runs in order.
                    self._executor.submit(self._rollback)
                    raise
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(_index_of(exc)) from None
        except TimeoutError:
            raise self.unavailable(shard, f"no answer within {self._timeout:g}s") from None
        except sqlite3.Error as exc:
            raise self.unavailable(shard, f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:  # the directory cannot be made
            raise self.unavailable(shard, f"{type(exc).__name__}: {exc}") from None
        return result

    async def upgrade_schema(self) -> UpgradeResult:
        def upgrade() -> UpgradeResult:
            result = _upgrade(self._open())
            self._schema_ready = True
            return result

        if self._closed:
            raise RuntimeError("the record store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, upgrade)
        except (sqlite3.Error, OSError) as exc:
            raise RecordStoreUnavailable(None, self.name, f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)


def _upgrade(conn: sqlite3.Connection) -> UpgradeResult:
    """Apply the migrations this file lacks, each in its own transaction (SQLite's
    DDL is transactional); BEGIN IMMEDIATE serialises concurrent upgraders."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(VERSION_TABLE["sqlite"])
        before = int(
            conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        )
        for migration in MIGRATIONS:
            if migration.version <= before:
                continue
            for statement in migration.statements("sqlite"):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_us) VALUES (?, ?, ?)",
                (migration.version, migration.description, now_us()),
            )
        after = int(
            conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return UpgradeResult(before, after)
