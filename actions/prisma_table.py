"""``_prisma_migrations``: the only module that writes it, exactly as ``prisma migrate deploy`` does.

    >>> async def show(conn):                                      # doctest: +SKIP
    ...     for row in await read_rows(conn):
    ...         print(row.migration_name, row.is_applied, row.is_failed)

Row meanings: applied = ``finished_at`` set and ``rolled_back_at`` NULL; failed = both NULL;
rolled back = ``rolled_back_at`` set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

TABLE = "_prisma_migrations"
TABLE_DDL = (
    "CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL, "
    "finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ, "
    "started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)"
)
_COLUMNS = "id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count"


@dataclass(frozen=True)
class MigrationRow:
    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def is_applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None

    @property
    def is_failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def is_rolled_back(self) -> bool:
        return self.rolled_back_at is not None


def new_id() -> str:
    """A UUID v4 string, as Prisma writes."""
    return str(uuid.uuid4())


async def table_exists(conn: asyncpg.Connection) -> bool:
    """Whether the table is visible on the search_path (Prisma's ``?schema=`` sets it)."""
    return bool(await conn.fetchval(f"SELECT to_regclass('{TABLE}') IS NOT NULL"))


async def ensure_table(conn: asyncpg.Connection) -> None:
    """Create the table when it is missing (never alters an existing one)."""
    if not await table_exists(conn):
        # IF NOT EXISTS: a concurrent Prisma may create it between the check and here
        await conn.execute(TABLE_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))


async def read_rows(conn: asyncpg.Connection) -> list[MigrationRow]:
    """Every row, oldest first; an empty list when the table does not exist."""
    if not await table_exists(conn):
        return []
    records = await conn.fetch(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY started_at, finished_at NULLS LAST")
    return [MigrationRow(**dict(r)) for r in records]


async def read_rows_by_id(conn: asyncpg.Connection, ids: list[str]) -> list[MigrationRow]:
    """The rows with these ids (those that exist), oldest first."""
    records = await conn.fetch(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ANY($1::text[]) "
                               "ORDER BY started_at, finished_at NULLS LAST", ids)
    return [MigrationRow(**dict(r)) for r in records]


async def insert_started(conn: asyncpg.Connection, name: str, checksum: str) -> str:
    """Record that ``name`` starts now, committed on its own so a crash leaves a failed row; its id.

    The insert commits with synchronous_commit off: WAL is flushed in order, so the migration's
    own (synchronous) commit makes it durable too, and if the server crashes before that, the
    migration did not commit either. One simple-protocol round trip, no disk flush waited for.
    """
    row_id = new_id()
    await conn.execute(started_sql(row_id, name, checksum))
    return row_id


def started_sql(row_id: str, name: str, checksum: str) -> str:
    """The started row as SQL text, its own transaction: it may lead the migration's round trip.

    Sent in one simple-protocol string before the migration's ``BEGIN``, it is committed before
    the file runs, whatever the file then does (as Prisma, which writes it first).
    """
    uuid.UUID(row_id)
    return (f"BEGIN; SET LOCAL synchronous_commit = off; "
            f"INSERT INTO {TABLE} (id, checksum, migration_name, started_at, applied_steps_count) "
            f"VALUES ({literal(row_id)}, {literal(checksum)}, {literal(name)}, clock_timestamp(), 0); COMMIT")


async def started_at(conn: asyncpg.Connection, row_id: str) -> datetime | None:
    return await conn.fetchval(f"SELECT started_at FROM {TABLE} WHERE id = $1", row_id)


def literal(value: str) -> str:
    r"""A string constant for SQL text, right whatever ``standard_conforming_strings`` says.

    >>> literal("it's"), literal("a\\b")
    ("'it''s'", "E'a\\\\b'")
    """
    if "\x00" in value:
        raise ValueError("a NUL byte cannot be part of an SQL string")
    quoted = value.replace("'", "''")
    if "\\" in value:  # an escape string reads backslashes the same way on every server
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def finish_sql(row_id: str) -> str:
    """SQL marking a row as applied; meant to run inside the migration's own transaction.

    Returned as text (the id is a UUID we generated) so it can share a round trip with COMMIT.
    """
    uuid.UUID(row_id)  # never interpolate anything but a UUID
    return (f"UPDATE {TABLE} SET finished_at = clock_timestamp(), applied_steps_count = 1, logs = NULL "
            f"WHERE id = '{row_id}'")


async def mark_finished(conn: asyncpg.Connection, row_id: str) -> None:
    await conn.execute(finish_sql(row_id))


def progress_sql(row_id: str, statements: int) -> str:
    """SQL recording, while a file runs statement by statement, that statements 1..N ran to completion.

    ``applied_steps_count`` holds it until the row is finished or marked failed: a process killed
    half-way leaves that record behind for ``status`` (Prisma only reads the column for display).
    """
    uuid.UUID(row_id)
    return f"UPDATE {TABLE} SET applied_steps_count = {int(statements)} WHERE id = '{row_id}'"


async def mark_failed(conn: asyncpg.Connection, row_id: str, logs: str) -> int:
    """Keep the row failed (finished_at NULL, 0 steps) with the error in ``logs``; 1, or 0 when no such row."""
    status = await conn.execute(
        f"UPDATE {TABLE} SET logs = $2, finished_at = NULL, applied_steps_count = 0 WHERE id = $1", row_id, logs)
    return int(status.split()[-1])


async def mark_rolled_back(conn: asyncpg.Connection, name: str) -> int:
    """Set ``rolled_back_at`` on every failed row of ``name``; returns how many rows changed."""
    status = await conn.execute(
        f"UPDATE {TABLE} SET rolled_back_at = now() "
        "WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL", name)
    return int(status.split()[-1])


async def insert_resolved_applied(conn: asyncpg.Connection, name: str, checksum: str) -> str:
    """Prisma's ``resolve --applied`` row: logs '', started_at = finished_at = now(), 0 steps."""
    row_id = new_id()
    await conn.execute(
        f"INSERT INTO {TABLE} (id, checksum, finished_at, migration_name, logs, started_at, applied_steps_count) "
        "VALUES ($1, $2, now(), $3, '', now(), 0)", row_id, checksum, name)
    return row_id


async def delete_applied(conn: asyncpg.Connection, name: str) -> int:
    """Delete the applied row(s) of ``name`` (the runbook's partial rollback); returns the count."""
    status = await conn.execute(
        f"DELETE FROM {TABLE} WHERE migration_name = $1 AND finished_at IS NOT NULL AND rolled_back_at IS NULL",
        name)
    return int(status.split()[-1])
