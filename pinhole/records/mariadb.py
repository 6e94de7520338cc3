"""One MariaDB/MySQL shard server (InnoDB) through aiomysql.

aiomysql rather than asyncmy: it is aio-libs' driver (maintained, releases in
2025), pure Python over PyMySQL (one wheel for every interpreter and platform,
no compiled extension to trust), and it closes a connection whose query was
cancelled, which this adapter relies on: every call runs under a deadline that
cancels it. asyncmy (Cython, faster) returned such connections to its pool with
the cancelled query's results still unread (asyncmy issues #100, #103; the fix
landed on its dev branch only in 2026).

Outage rules, as for the hot cache: a short connect timeout, one deadline over a
whole call (pool wait, connect, handshake, statements, commit), no retry of
anything but InnoDB's own deadlocks, and every failure surfaced as
``RecordStoreUnavailable`` naming the shard and this server. A connection whose
call failed in any way other than a clean server-side error is closed, never
reused.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import aiomysql
import pymysql

from pinhole.domain.record import now_us
from pinhole.records.schema import MIGRATIONS, VERSION_TABLE, UpgradeResult
from pinhole.records.sql import DuplicateKey, SqlRecordStore, Tx

_T = TypeVar("_T")

SCHEMES = ("mysql", "mariadb")
# InnoDB chose this transaction as a deadlock victim, or it waited too long for a
# row lock: the transaction is rolled back and may simply be run again.
_RETRYABLE = {1213, 1205}
_TRANSACTION_ATTEMPTS = 5
_DUPLICATE_KEY = 1062
_NO_SUCH_TABLE = 1146
_KEY_RE = re.compile(r"for key '(?:[^'.]*\.)?([^']+)'")
# A lock name for `pinhole db upgrade`: one upgrader per server at a time.
_UPGRADE_LOCK = "pinhole.schema-upgrade"


class _MariaDbTx:
    for_update = " FOR UPDATE"
    for_share = " LOCK IN SHARE MODE"

    def __init__(self, cursor: Any, lock_wait_seconds: float) -> None:
        self._cursor = cursor
        self._lock_wait = lock_wait_seconds
        self.locked = False

    async def lock(self, name: str) -> None:
        await self._cursor.execute("SELECT GET_LOCK(%s, %s)", (name, self._lock_wait))
        row = await self._cursor.fetchone()
        self.locked = True
        if not row or row[0] != 1:
            raise TimeoutError(f"lock {name} not granted within {self._lock_wait:g}s")

    async def release(self) -> None:
        """Named locks outlive transactions (closing the connection drops them too)."""
        if self.locked:
            await self._cursor.execute("SELECT RELEASE_ALL_LOCKS()")
            await self._cursor.fetchall()
            self.locked = False

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        await self._cursor.execute(sql, tuple(params))
        rows: list[tuple[Any, ...]] = list(await self._cursor.fetchall())
        return rows

    async def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        await self._cursor.execute(sql, tuple(params))


def _errno(exc: pymysql.MySQLError) -> int:
    code = exc.args[0] if exc.args else 0
    return code if isinstance(code, int) else 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        return f"{type(exc).__name__} {exc.args[0]}: {exc.args[1]}"
    return f"{type(exc).__name__}: {exc}"


def _connection_is_sound(exc: BaseException) -> bool:
    """Whether the connection that raised ``exc`` may be rolled back and reused:
    the server refused a statement cleanly (a duplicate key, a deadlock victim,
    a missing table), or ``body`` raised on its own (``RecordNotFound``)."""
    if isinstance(exc, pymysql.MySQLError):
        return isinstance(
            exc, pymysql.IntegrityError | pymysql.ProgrammingError | pymysql.DataError
        ) or (_errno(exc) in _RETRYABLE)
    return isinstance(exc, Exception) and not isinstance(exc, OSError | TimeoutError)


class MariaDbRecordStore(SqlRecordStore):
    """``RecordStore`` on one MariaDB/MySQL database (a shard server).

    ``connect_timeout_seconds`` bounds a TCP connect; ``timeout_seconds`` a whole
    call. The pool is made on first use, so building the store never fails."""

    dialect = "mariadb"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        name: str = "default",
        connect_timeout_seconds: float = 1.0,
        timeout_seconds: float = 2.0,
        max_connections: int = 10,
    ) -> None:
        super().__init__(name)
        self.host, self.port, self.database = host, port, database
        self._connect_args: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "db": database,
            "charset": "utf8mb4",
            "autocommit": False,
            "connect_timeout": connect_timeout_seconds,
        }
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        name: str = "default",
        connect_timeout_seconds: float = 1.0,
        timeout_seconds: float = 2.0,
        max_connections: int = 10,
    ) -> MariaDbRecordStore:
        """``mysql://user:password@host:3306/database`` (or ``mariadb://``)."""
        parts = urlsplit(url)
        database = unquote(parts.path.lstrip("/"))
        if parts.scheme not in SCHEMES or not parts.hostname or not database or "/" in database:
            raise ValueError(
                "a MariaDB record store URL is mysql://user:password@host:port/database, "
                f"not {url!r}"
            )
        query = parse_qs(parts.query)
        if query:
            raise ValueError(f"the MariaDB record store URL takes no options, not {parts.query!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=database,
            name=name,
            connect_timeout_seconds=connect_timeout_seconds,
            timeout_seconds=timeout_seconds,
            max_connections=max_connections,
        )

    def __repr__(self) -> str:
        return f"MariaDbRecordStore({self.name!r}, {self.host}:{self.port}/{self.database})"

    async def _get_pool(self) -> aiomysql.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    # minsize 0: no connection is made until a call needs one.
                    self._pool = await aiomysql.create_pool(
                        minsize=0,
                        maxsize=self._max_connections,
                        # Below MariaDB's default wait_timeout (8 h) and any
                        # proxy's idle cut, so a pooled connection is not stale.
                        pool_recycle=600,
                        **self._connect_args,
                    )
        return self._pool

    async def _transaction(
        self, shard: int | None, body: Callable[[Tx], Awaitable[_T]], *, write: bool
    ) -> _T:
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._run_once(body)
            except pymysql.IntegrityError as exc:
                if _errno(exc) != _DUPLICATE_KEY:
                    raise self.unavailable(shard, _reason(exc)) from None
                match = _KEY_RE.search(str(exc.args[1]) if len(exc.args) > 1 else "")
                raise DuplicateKey(match.group(1) if match else "unknown") from None
            except pymysql.MySQLError as exc:
                if _errno(exc) in _RETRYABLE and attempt < _TRANSACTION_ATTEMPTS:
                    # InnoDB rolled the victim back at once; a jittered pause lets
                    # the winner finish before the retry.
                    await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
                    continue
                if _errno(exc) == _NO_SUCH_TABLE:
                    raise self.unavailable(
                        shard, "the schema is not applied: run `pinhole db upgrade`"
                    ) from None
                raise self.unavailable(shard, _reason(exc)) from None
            except TimeoutError:
                raise self.unavailable(shard, f"no answer within {self._timeout:g}s") from None
            except OSError as exc:
                raise self.unavailable(shard, _reason(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_once(self, body: Callable[[Tx], Awaitable[_T]]) -> _T:
        pool = await self._get_pool()
        conn = await pool.acquire()
        try:
            tx = _MariaDbTx(await conn.cursor(), self._timeout)
            try:
                result = await body(tx)
                await conn.commit()
                await tx.release()
            except BaseException as exc:
                if not _connection_is_sound(exc):
                    conn.close()  # lost, cut short or cancelled mid-call: never reused
                    raise
                try:
                    await conn.rollback()
                    await tx.release()
                except BaseException:
                    conn.close()
                raise
        finally:
            pool.release(conn)
        return result

    async def upgrade_schema(self) -> UpgradeResult:
        """On its own connection (not the pool), with no deadline on the DDL
        itself: a migration on a big table takes as long as it takes."""
        try:
            async with asyncio.timeout(self._timeout):
                conn = await aiomysql.connect(**self._connect_args)
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            raise self.unavailable(None, _reason(exc)) from None
        try:
            async with conn.cursor() as cur:
                # "Table already exists" notes are what idempotent DDL is for.
                await cur.execute("SET SESSION sql_notes = 0")
                await cur.execute("SELECT GET_LOCK(%s, 60)", (_UPGRADE_LOCK,))
                if (await cur.fetchone())[0] != 1:
                    raise self.unavailable(None, "another `pinhole db upgrade` holds the lock")
                await cur.execute(VERSION_TABLE["mariadb"])
                before = await _version(cur)
                for migration in MIGRATIONS:
                    if migration.version <= before:
                        continue
                    for statement in migration.statements("mariadb"):
                        await cur.execute(statement)
                    await cur.execute(
                        "INSERT IGNORE INTO schema_migrations (version, description, applied_us)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.description, now_us()),
                    )
                    await conn.commit()
                after = await _version(cur)
                await cur.execute("SELECT RELEASE_LOCK(%s)", (_UPGRADE_LOCK,))
                await conn.commit()
        except (pymysql.MySQLError, OSError) as exc:
            raise self.unavailable(None, _reason(exc)) from None
        finally:
            conn.close()
        return UpgradeResult(before, after)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()


async def _version(cur: Any) -> int:
    await cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0])
