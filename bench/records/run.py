"""The record store: listing latency for an owner with 100,000 records, inserts
per second per shard server, and upload throughput with records against without.

    .venv/bin/python bench/records/run.py [--records 100000] [--s3]

Real servers, started for the run: Debian's ``mariadbd`` (two of them for the
sharded rows, each with its own data directory on a free loopback port, through
``tests.support.mariadb``), SQLite in a temp file for comparison, and a real
``pinhole ingest`` process for the HTTP rows (fs storage and the memory queue by
default, so that the records' own cost is what moves; ``--s3`` uses moto and
tansu as ``bench/ingest`` does). Every measured call goes through Pinhole's own
adapters (``MariaDbRecordStore``, ``SqliteRecordStore``, and the
``ShardedRecordStore`` that ``build_record_store`` wires). Only the seed of 100k
records takes a bulk path of its own: multi-row INSERTs of rows shaped exactly
as ``create`` writes them, because 100k one-row transactions would take minutes.

It prints markdown tables and asserts nothing: timings are not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds tests/ and bench/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import aiomysql
import pyvips

from bench.ingest.run import moto_process, unique
from pinhole.app.wiring import build_record_servers, build_record_store
from pinhole.domain.record import (
    RecordPage,
    decode_cursor,
    encode_cursor,
    encode_metadata,
    make_record_id,
    owner_shard,
)
from pinhole.ports import RecordStore
from pinhole.records.mariadb import MariaDbRecordStore
from pinhole.records.sql import COLUMNS, SqlRecordStore, Tx, record_from_row
from pinhole.records.sqlite import SqliteRecordStore
from pinhole.settings import RecordShards
from tests.support.mariadb import MariaDbServer, start_mariadb
from tests.support.photos import photo_path
from tests.support.processes import start_pinhole
from tests.support.services import start_tansu

OWNER = "bench-owner"
# Sized like a production shard server's, not the test harness's 32 MB: set at
# start (both are dynamic in MariaDB 10.11), everything else is the default,
# durable InnoDB (innodb_flush_log_at_trx_commit=1).
SERVER_SETTINGS = (
    "SET GLOBAL innodb_buffer_pool_size = 512 * 1024 * 1024;"
    " SET GLOBAL innodb_log_file_size = 256 * 1024 * 1024;"
)


# --- Small helpers. ----------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def metadata_for(n: int) -> str:
    return encode_metadata({"title": f"photo {n}", "album": "bench", "tags": ["a", "b"]})


# --- Seeding: the bench's own bulk path. -------------------------------------


def seed_rows(owner: str, count: int, others: int) -> Iterator[tuple[object, ...]]:
    """``count`` rows of ``owner`` and ``others`` rows spread over 1,000 other
    owners, one upload every 10 ms in the past, shaped as ``create`` writes them
    (the id embeds the owner's shard and the creation millisecond)."""
    total = count + others
    start_ms = time.time_ns() // 1_000_000 - total * 10 - 60_000
    mine = set(random.Random(17).sample(range(total), count))
    for n in range(total):
        who = owner if n in mine else f"bench-other-{n % 1000}"
        millis = start_ms + n * 10
        rid = make_record_id(owner_shard(who), millis, n % 1024)
        created = millis * 1000 + n % 1000
        yield (rid, who, secrets.token_hex(16), metadata_for(n), None, False, created, created)


INSERT = f"INSERT INTO records ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"


async def seed_mariadb(url: str, owner: str, count: int, others: int) -> float:
    store = MariaDbRecordStore.from_url(url)
    args = store._connect_args
    began = time.perf_counter()
    conn = await aiomysql.connect(**args)
    try:
        async with conn.cursor() as cur:
            batch: list[tuple[object, ...]] = []
            for row in seed_rows(owner, count, others):
                batch.append(row)
                if len(batch) == 5000:
                    await cur.executemany(INSERT, batch)  # one multi-row INSERT per ~1 MB
                    await conn.commit()
                    batch.clear()
            if batch:
                await cur.executemany(INSERT, batch)
                await conn.commit()
            await cur.execute("ANALYZE TABLE records")
            await cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - began


def seed_sqlite(path: Path, owner: str, count: int, others: int) -> float:
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(INSERT.replace("%s", "?"), seed_rows(owner, count, others))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return time.perf_counter() - began


# --- Listing. ----------------------------------------------------------------


@dataclass
class Listing:
    engine: str
    what: str
    limit: int
    latencies: list[float]
    server_cpu: float | None = None  # CPU-seconds of mariadbd over these calls
    client_cpu: float | None = None  # CPU-seconds of this process over these calls

    def row(self) -> str:
        lat = self.latencies
        calls = len(lat)
        server = "-" if self.server_cpu is None else f"{self.server_cpu / calls * 1e6:,.0f}"
        client = "-" if self.client_cpu is None else f"{self.client_cpu / calls * 1e6:,.0f}"
        return (
            f"| {self.engine} | {self.what} | {self.limit} | {calls:,} "
            f"| {ms(pct(lat, 50))} | {ms(pct(lat, 99))} | {ms(max(lat))} "
            f"| {server} | {client} |"
        )


@contextmanager
def cpu_meter(pids: list[int]) -> Iterator[list[float]]:
    """Yields a list that holds, after the block: CPU-seconds of this process,
    then of each of ``pids``."""
    out: list[float] = []
    before = [time.process_time(), *(cpu_seconds(pid) for pid in pids)]
    yield out
    after = [time.process_time(), *(cpu_seconds(pid) for pid in pids)]
    out += [a - b for a, b in zip(after, before, strict=True)]


Lister = Callable[[int, str | None], Awaitable[RecordPage]]


def shipped(store: RecordStore) -> Lister:
    """The adapter's own ``list_by_owner``: what the API runs."""

    async def page(limit: int, cursor: str | None) -> RecordPage:
        return await store.list_by_owner(OWNER, limit=limit, cursor=cursor)

    return page


def bounded(store: SqlRecordStore) -> Lister:
    """Bench only, not product code: ``SqlRecordStore.list_by_owner`` with the
    cursor's condition given a leading bound the index can seek to
    (``created_us <= c AND (created_us < c OR id < i)``, the same rows), and on
    MariaDB ``FORCE INDEX`` so the optimiser takes that range instead of the
    owner's whole ``ref``. Same transaction, same decoding; only the SQL differs."""
    hint = " FORCE INDEX (records_owner_created)" if store.dialect == "mariadb" else ""

    async def page(limit: int, cursor: str | None) -> RecordPage:
        where = "owner = %s"
        params: list[object] = [OWNER]
        if cursor is not None:
            created_us, after_id = decode_cursor(cursor)
            where += " AND created_us <= %s AND (created_us < %s OR id < %s)"
            params += [created_us, created_us, after_id]

        async def read(tx: Tx) -> list[tuple[Any, ...]]:
            return await tx.fetchall(
                f"SELECT {COLUMNS} FROM records{hint} WHERE {where}"
                " ORDER BY created_us DESC, id DESC LIMIT %s",
                [*params, limit + 1],
            )

        rows = await store._transaction(owner_shard(OWNER), read, write=False)
        records = [record_from_row(row) for row in rows[:limit]]
        last = records[-1] if len(rows) > limit else None
        return RecordPage(records, encode_cursor(last.created_us, last.id) if last else None)

    return page


async def timed(
    lister: Lister, limit: int, cursor: str | None, repeats: int, pids: list[int]
) -> tuple[list[float], list[float]]:
    """``repeats`` calls of one page: latencies, and CPU (this process, then ``pids``)."""
    latencies = []
    with cpu_meter(pids) as cpu:
        for _ in range(repeats):
            began = time.perf_counter()
            page = await lister(limit, cursor)
            latencies.append(time.perf_counter() - began)
            if len(page.records) != limit:
                raise RuntimeError(f"a page of {len(page.records)} records, not {limit}")
    return latencies, cpu


async def walk(
    lister: Lister, limit: int, expected: int, pids: list[int]
) -> tuple[list[float], list[float], dict[int, str]]:
    """Every page of the owner, following cursors: latencies, CPU, and the cursor
    after each 10,000th record."""
    latencies: list[float] = []
    cursor: str | None = None
    seen = 0
    cursors: dict[int, str] = {}
    with cpu_meter(pids) as cpu:
        while True:
            began = time.perf_counter()
            page = await lister(limit, cursor)
            latencies.append(time.perf_counter() - began)
            seen += len(page.records)
            cursor = page.cursor
            if cursor is None:
                break
            if seen % 10_000 == 0:
                cursors[seen] = cursor
    if seen != expected:
        sys.exit(f"a walk saw {seen} records, not {expected}")
    return latencies, cpu, cursors


def listing(
    engine: str, query: str, what: str, limit: int, lat: list[float], cpu: list[float] | None
) -> Listing:
    server = cpu[1] if cpu and len(cpu) > 1 else None
    return Listing(f"{engine}, {query}", what, limit, lat, server, cpu[0] if cpu else None)


async def list_bench(
    engine: str, store: SqlRecordStore, pids: list[int], args: argparse.Namespace
) -> tuple[list[Listing], dict[int, tuple[float, float]], dict[int, str]]:
    """The listing rows of one engine; p50 by depth (as shipped, bounded); cursors."""
    rows: list[Listing] = []
    ours, fixed = shipped(store), bounded(store)
    for limit in (50, 1000):
        await timed(ours, limit, None, 10, pids)  # warm-up
        lat, cpu = await timed(ours, limit, None, args.repeats, pids)
        rows.append(listing(engine, "as shipped", "first page", limit, lat, cpu))
    for name, lister in (("as shipped", ours), ("bounded (bench only)", fixed)):
        lat, cpu, cursors = await walk(lister, 1000, args.records, pids)
        what = f"every page of a walk by cursors ({args.records:,} records)"
        rows.append(listing(engine, name, what, 1000, lat, cpu))
    by_depth: dict[int, tuple[float, float]] = {}
    deep: dict[str, tuple[list[float], list[float]]] = {}
    for depth, cursor in sorted(cursors.items()):
        p50s = []
        for name, lister in (("as shipped", ours), ("bounded (bench only)", fixed)):
            lat, cpu = await timed(lister, 50, cursor, args.deep_repeats, pids)
            lats, cpus = deep.setdefault(name, ([], [0.0] * (1 + len(pids))))
            lats += lat
            deep[name] = (lats, [a + b for a, b in zip(cpus, cpu, strict=True)])
            p50s.append(pct(lat, 50))
        by_depth[depth] = (p50s[0], p50s[1])
    if cursors:
        span = f"{min(cursors) // 1000}k to {max(cursors) // 1000}k"
        for name, (lat, cpu) in deep.items():
            what = f"a page after record {span} (cursors from the walk)"
            rows.append(listing(engine, name, what, 50, lat, cpu))
    print(f"listing on {engine} done", file=sys.stderr)
    return rows, by_depth, cursors


# --- Inserts. ----------------------------------------------------------------


@dataclass
class Inserts:
    engine: str
    servers: int
    in_flight: int
    done: int
    seconds: float
    errors: int
    latencies: list[float]
    server_cpu: list[float] = field(default_factory=list)  # CPU-seconds per server
    client_cpu: float = 0.0

    @property
    def per_second(self) -> float:
        return self.done / self.seconds

    def row(self) -> str:
        per_server = self.per_second / self.servers
        if self.server_cpu:
            cpu = " / ".join(
                f"{c / max(1, self.done) * self.servers * 1e6:.0f}" for c in self.server_cpu
            )
        else:
            cpu = "(in process)"
        return (
            f"| {self.engine} | {self.servers} | {self.in_flight} | {self.per_second:,.0f} "
            f"| {per_server:,.0f} | {ms(pct(self.latencies, 50))} | {ms(pct(self.latencies, 99))} "
            f"| {cpu} | {self.client_cpu / max(1, self.done) * 1e6:.0f} | {self.errors} |"
        )


async def inserts(
    store: RecordStore,
    engine: str,
    servers: int,
    in_flight: int,
    seconds: float,
    pids: list[int],
) -> Inserts:
    """``in_flight`` concurrent ``create`` calls for ``seconds``, over 1,000 owners
    (so both shards of a sharded store get their share)."""
    owners = [f"ins-{secrets.token_hex(4)}-{i}" for i in range(1000)]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            n = next(counter)
            began = time.perf_counter()
            try:
                await store.create(
                    owners[n % len(owners)],
                    secrets.token_hex(16),  # type: ignore[arg-type]
                    metadata={"title": f"photo {n}", "album": "bench", "tags": ["a", "b"]},
                )
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    cpu_before = [cpu_seconds(pid) for pid in pids]
    client_before = time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - began
    client = time.process_time() - client_before
    server_cpu = [cpu_seconds(pid) - b for pid, b in zip(pids, cpu_before, strict=True)]
    return Inserts(
        engine, servers, in_flight, len(latencies), elapsed, errors, latencies, server_cpu, client
    )


# --- Uploads over HTTP. ------------------------------------------------------


def small_jpeg() -> bytes:
    """A real photo at 320 px wide: about 20 KB, so the request is the work, not the bytes."""
    image = pyvips.Image.new_from_file(str(photo_path("autumn-2560x1600.jpg")))
    data: bytes = image.thumbnail_image(320).write_to_buffer(".jpg", Q=80)
    return data


@dataclass
class Uploads:
    mode: str
    done: int = 0
    seconds: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])  # ingest, mariadbd

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def cpu_ms(self, which: int) -> str:
        return f"{self.cpu[which] / max(1, self.done) * 1000:.2f}"


async def upload_window(
    session: aiohttp.ClientSession,
    url: str,
    photo: bytes,
    seconds: float,
    concurrency: int,
    counter: Iterator[int],
    with_owner: bool,
    into: Uploads | None,
    pids: list[int],
) -> None:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            n = next(counter)
            target = f"{url}/v1/images"
            if with_owner:
                target += f"?owner=up-{n % 1000}"
            began = time.perf_counter()
            async with session.post(
                target, data=unique(photo, n), headers={"Content-Type": "image/jpeg"}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - began)

    with cpu_meter(pids) as cpu:
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    if into is not None:
        into.cpu = [into.cpu[0] + cpu[1], into.cpu[1] + cpu[2]]
        into.done += len(latencies)
        into.seconds += elapsed
        into.errors += errors
        into.latencies += latencies
        into.rounds.append(len(latencies) / elapsed)


async def http_listing(
    session: aiohttp.ClientSession, url: str, limit: int, cursor: str | None, repeats: int
) -> list[float]:
    target = f"{url}/v1/owners/{OWNER}/images?limit={limit}"
    if cursor:
        target += f"&cursor={cursor}"
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        async with session.get(target) as resp:
            body = await resp.json()
            if resp.status != 200 or len(body["records"]) != limit:
                raise RuntimeError(f"listing over HTTP answered {resp.status}: {body}")
        latencies.append(time.perf_counter() - began)
    return latencies


# --- The run. ----------------------------------------------------------------


def pid_of(server: MariaDbServer) -> int:
    if server.proc is None:
        raise RuntimeError("the MariaDB server is not running")
    return server.proc.pid


def started_mariadb() -> MariaDbServer:
    server = start_mariadb()
    server.sql(SERVER_SETTINGS)
    return server


async def prepared(url: str, shards: RecordShards) -> RecordStore:
    for server in build_record_servers(url, shards).values():
        await server.upgrade_schema()
        await server.close()
    return build_record_store(url, shards)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="pinhole-bench-records-"))
    servers: list[MariaDbServer] = []
    listings: list[Listing] = []
    insert_rows: list[Inserts] = []
    seeds: dict[str, float] = {}
    http_rows: list[tuple[str, list[float]]] = []
    load_before = loadavg()
    began_run = time.perf_counter()
    try:
        a = started_mariadb()
        servers.append(a)
        version = a.sql("SELECT VERSION()").strip()
        url_a = a.url(a.create_database())
        one = RecordShards(max_connections=32)
        maria = await prepared(url_a, one)
        if not isinstance(maria, SqlRecordStore):
            raise RuntimeError(f"one server should be a SqlRecordStore, not {maria!r}")
        maria_server = maria
        seeds["MariaDB"] = await seed_mariadb(url_a, OWNER, args.records, args.others)
        sqlite_path = work / "records.db"
        lite = SqliteRecordStore(sqlite_path)
        await lite.upgrade_schema()
        seeds["SQLite"] = seed_sqlite(sqlite_path, OWNER, args.records, args.others)

        depth_table: dict[str, dict[int, tuple[float, float]]] = {}
        engines: list[tuple[str, SqlRecordStore, list[int]]] = [
            ("MariaDB", maria_server, [pid_of(a)]),
            ("SQLite", lite, []),
        ]
        deep_cursor: str | None = None
        deep_position = 0
        for engine, store, pids in engines:
            rows, depth_table[engine], cursors = await list_bench(engine, store, pids, args)
            listings += rows
            if engine == "MariaDB" and cursors:
                # Halfway down: MariaDB's plan for the shipped query is slow there
                # (near the end of the walk it takes the range again).
                deep_position = min(cursors, key=lambda d: abs(d - args.records // 2))
                deep_cursor = cursors[deep_position]

        for in_flight in (1, 8, 32):
            insert_rows.append(
                await inserts(maria, "MariaDB", 1, in_flight, args.seconds, [pid_of(a)])
            )
        for in_flight in (1, 8, 32):
            insert_rows.append(await inserts(lite, "SQLite", 1, in_flight, args.seconds, []))
        print("inserts on one server done", file=sys.stderr)

        b = started_mariadb()
        servers.append(b)
        url_b = b.url(b.create_database())
        two = RecordShards(servers={"b": url_b}, map={"800-fff": "b"}, max_connections=32)
        sharded = await prepared(a.url(a.create_database()), two)
        for in_flight in (8, 32, 64):
            insert_rows.append(
                await inserts(
                    sharded, "MariaDB", 2, in_flight, args.seconds, [pid_of(a), pid_of(b)]
                )
            )
        await sharded.close()
        print("inserts on two servers done", file=sys.stderr)
        await lite.close()

        upload_with, upload_without = Uploads("with ?owner="), Uploads("without")
        await maria.close()
        with s3_or_fs(args.s3, work) as env:
            env.update(
                {
                    "PINHOLE_RECORDS": url_a,
                    "PINHOLE_AUTH__ALLOW_ANONYMOUS": "true",
                    "PINHOLE_LOG_LEVEL": "WARNING",
                }
            )
            ingest = start_pinhole("ingest", env, work)
            pids = [ingest.proc.pid, pid_of(a)]
            try:
                photo = small_jpeg()
                counter = iter(range(10**9))
                connector = aiohttp.TCPConnector(limit=args.concurrency)
                async with aiohttp.ClientSession(connector=connector) as session:
                    for mode in (False, True):  # warm-up, both paths
                        await upload_window(
                            session,
                            ingest.url,
                            photo,
                            2,
                            args.concurrency,
                            counter,
                            mode,
                            None,
                            pids,
                        )
                    for r in range(args.rounds):
                        order = (False, True) if r % 2 == 0 else (True, False)
                        for with_owner in order:
                            await upload_window(
                                session,
                                ingest.url,
                                photo,
                                args.upload_seconds,
                                args.concurrency,
                                counter,
                                with_owner,
                                upload_with if with_owner else upload_without,
                                pids,
                            )
                    await http_listing(session, ingest.url, 50, None, 10)  # warm-up
                    http_rows.append(
                        (
                            "first page",
                            await http_listing(session, ingest.url, 50, None, args.repeats),
                        )
                    )
                    if deep_cursor:
                        http_rows.append(
                            (
                                f"a page after record {deep_position:,}",
                                await http_listing(
                                    session, ingest.url, 50, deep_cursor, args.repeats
                                ),
                            )
                        )
                    http_rows.append(
                        (
                            "first page, limit 1000",
                            await http_listing(session, ingest.url, 1000, None, args.repeats // 4),
                        )
                    )
            finally:
                ingest.stop()
    finally:
        for server in servers:
            server.remove()
        shutil.rmtree(work, ignore_errors=True)

    report(
        args,
        version,
        seeds,
        listings,
        depth_table,
        insert_rows,
        upload_without,
        upload_with,
        http_rows,
        load_before,
        time.perf_counter() - began_run,
    )


@contextmanager
def s3_or_fs(s3: bool, work: Path) -> Iterator[dict[str, str]]:
    if not s3:
        yield {"PINHOLE_STORAGE": f"file://{work / 'blobs'}", "PINHOLE_QUEUE": "memory://"}
        return
    broker = start_tansu()
    try:
        with moto_process() as endpoint:
            yield {
                "PINHOLE_STORAGE": f"s3://bench-records?endpoint={endpoint}&region=us-east-1",
                "PINHOLE_QUEUE": broker.url,
                "PINHOLE_KAFKA__PARTITIONS": "4",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            }
    finally:
        broker.stop()


def report(
    args: argparse.Namespace,
    version: str,
    seeds: dict[str, float],
    listings: list[Listing],
    depth_table: dict[str, dict[int, tuple[float, float]]],
    insert_rows: list[Inserts],
    without: Uploads,
    with_owner: Uploads,
    http_rows: list[tuple[str, list[float]]],
    load_before: str,
    total_seconds: float,
) -> None:
    cores = os.cpu_count()
    print()
    print(
        f"Records bench: {args.records:,} records of one owner plus {args.others:,} of "
        f"1,000 others; MariaDB {version} (InnoDB, buffer pool 512 MB, redo log "
        f"256 MB, flush at every commit, no binlog) and SQLite {sqlite3.sqlite_version} (WAL, "
        f"synchronous=NORMAL); everything on one {cores}-core machine; load average "
        f"{load_before} before, {loadavg()} after; {total_seconds:.0f} s in all."
    )
    print()
    print(
        "Seed (the bench's bulk path, not the API): "
        + ", ".join(f"{engine} {seconds:.1f} s" for engine, seconds in seeds.items())
    )
    print()
    print("`list_by_owner` through the adapter (Python client in the bench process):")
    print()
    print(
        "| engine, query | pages | limit | calls | p50 ms | p99 ms | max ms "
        "| mariadbd CPU µs/call | client CPU µs/call |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in listings:
        print(row.row())
    print()
    print(f"A page of 50 by depth, p50 ms of {args.deep_repeats} calls (as shipped / bounded):")
    print()
    depths = sorted({d for table in depth_table.values() for d in table})
    print("| engine | " + " | ".join(f"after {d // 1000}k" for d in depths) + " |")
    print("|---|" + "---:|" * len(depths))
    for engine, table in depth_table.items():
        cells = [f"{ms(table[d][0])} / {ms(table[d][1])}" if d in table else "" for d in depths]
        print(f"| {engine} | " + " | ".join(cells) + " |")
    print()
    print(
        f"`create` through the adapter, {args.seconds:g} s each, 1,000 owners, pool of 32 "
        "connections per server (server CPU: µs of mariadbd CPU per insert it took):"
    )
    print()
    print(
        "| engine | servers | in flight | inserts/s | per server | p50 ms | p99 ms "
        "| server CPU µs/insert | client CPU µs/insert | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in insert_rows:
        print(row.row())
    print()
    ratio = with_owner.per_second / without.per_second if without.per_second else 0.0
    print(
        f"`pinhole ingest` over HTTP ({'moto + tansu' if args.s3 else 'fs storage, memory queue'},"
        f" records on MariaDB), ~20 KB distinct JPEGs, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds of {args.upload_seconds:g} s per mode:"
    )
    print()
    print(
        "| uploads | uploads/s | rounds | p50 ms | p99 ms | errors "
        "| ingest CPU ms/upload | mariadbd CPU ms/upload | vs without |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for up, r in ((without, 1.0), (with_owner, ratio)):
        rounds = ", ".join(f"{x:.0f}" for x in up.rounds)
        print(
            f"| {up.mode} | {up.per_second:.0f} | {rounds} | {ms(pct(up.latencies, 50))} "
            f"| {ms(pct(up.latencies, 99))} | {up.errors} | {up.cpu_ms(0)} | {up.cpu_ms(1)} "
            f"| {r:.2f}x |"
        )
    print()
    print(f"`GET /v1/owners/{OWNER}/images` over HTTP, sequential:")
    print()
    print("| page | calls | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for what, lat in http_rows:
        print(f"| {what} | {len(lat)} | {ms(pct(lat, 50))} | {ms(pct(lat, 99))} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=50_000, help="records of other owners")
    parser.add_argument("--repeats", type=int, default=400, help="calls per first-page row")
    parser.add_argument("--deep-repeats", type=int, default=20, help="calls per depth")
    parser.add_argument("--seconds", type=float, default=5.0, help="per insert row")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--upload-seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--s3", action="store_true", help="moto + tansu instead of fs + memory")
    asyncio.run(main(parser.parse_args()))
