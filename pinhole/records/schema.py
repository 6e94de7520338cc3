"""The record schema, as numbered migrations per SQL dialect.

``pinhole db upgrade`` applies every migration a shard server has not had, in
order, and records each in ``schema_migrations``. Every statement is idempotent
(``IF NOT EXISTS``): MariaDB commits DDL as it goes, so a migration cut short (a
server that died halfway) is simply applied again on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "mariadb"]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    mariadb: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.mariadb


VERSION_TABLE = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
        " applied_us INTEGER NOT NULL)"
    ),
    "mariadb": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL,"
        " applied_us BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    ),
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "records: by id, by owner newest first, by alias per owner, by image",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS records ("
            " id INTEGER PRIMARY KEY,"
            " owner TEXT NOT NULL,"
            " image_id TEXT NOT NULL,"
            " metadata TEXT NOT NULL,"
            " alias TEXT,"
            " is_private INTEGER NOT NULL DEFAULT 0,"
            " created_us INTEGER NOT NULL,"
            " updated_us INTEGER NOT NULL)",
            "CREATE UNIQUE INDEX IF NOT EXISTS records_owner_alias ON records (owner, alias)",
            "CREATE INDEX IF NOT EXISTS records_owner_created ON records (owner, created_us, id)",
            "CREATE INDEX IF NOT EXISTS records_image ON records (image_id, created_us, id)",
        ),
        # Owners, aliases and image ids are ASCII by validation; ascii_bin makes
        # them compare byte for byte (case-sensitive, like SQLite and URLs).
        mariadb=(
            "CREATE TABLE IF NOT EXISTS records ("
            " id BIGINT NOT NULL PRIMARY KEY,"
            " owner VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,"
            " image_id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,"
            " metadata TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
            " alias VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,"
            " is_private BOOLEAN NOT NULL DEFAULT FALSE,"
            " created_us BIGINT NOT NULL,"
            " updated_us BIGINT NOT NULL,"
            " UNIQUE KEY records_owner_alias (owner, alias),"
            " KEY records_owner_created (owner, created_us, id),"
            " KEY records_image (image_id, created_us, id)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ),
    ),
    Migration(
        2,
        "records: the bytes of each record's original, summed per owner for storage quotas",
        # A record made before this migration counts 0 bytes (README "Storage quotas").
        # SQLite has no ADD COLUMN IF NOT EXISTS, but its DDL is transactional: the
        # migration is applied whole or not at all.
        sqlite=(
            "ALTER TABLE records ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX IF NOT EXISTS records_owner_size ON records (owner, size_bytes)",
        ),
        # (owner, size_bytes) covers an owner's usage: COUNT and SUM read the index alone.
        mariadb=(
            "ALTER TABLE records ADD COLUMN IF NOT EXISTS size_bytes BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX IF NOT EXISTS records_owner_size ON records (owner, size_bytes)",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


@dataclass(frozen=True)
class UpgradeResult:
    """What one shard server's upgrade did: versions before and after."""

    before: int
    after: int

    @property
    def applied(self) -> int:
        return self.after - self.before


# The bookkeeping of live shard moves (``pinhole db migrate``), outside the
# numbered migrations: a deployment that never moves a shard never has them, and
# the migrator makes them (idempotently) on the servers a move touches before
# the move starts. ``control_documents`` (on "default"): small named JSON
# documents, the live record shard map, copy cursors and the migration lease.
# ``shard_fences`` (on a move's source): once a shard is fenced, a write that
# would make the source the shard's authority is refused, so the authority
# passes to the target at one instant for every process (README "Owners and
# records").
CONTROL_TABLE_NAMES = ("control_documents", "shard_fences")
CONTROL_TABLES: dict[Dialect, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS control_documents ("
        " name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_us INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS shard_fences ("
        " shard INTEGER PRIMARY KEY, fenced INTEGER NOT NULL DEFAULT 0)",
    ),
    "mariadb": (
        "CREATE TABLE IF NOT EXISTS control_documents ("
        " name VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,"
        " body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,"
        " updated_us BIGINT NOT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS shard_fences ("
        " shard INT NOT NULL PRIMARY KEY,"
        " fenced BOOLEAN NOT NULL DEFAULT FALSE"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    ),
}
