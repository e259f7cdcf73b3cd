"""Where a database stands against a migrations folder, told truthfully.

    >>> status = await migration_status(env.migration_url, env.migrations_dir)   # doctest: +SKIP
    >>> status.up_to_date, status.pending, [f.name for f in status.failed]         # doctest: +SKIP
    (False, ['20240301_add_index'], [])

Unlike Prisma, a migration marked ``resolve --rolled-back`` is reported as pending (it is not
applied), and files edited after being applied are reported as ``modified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from actions.db import connection
from actions.migrations_dir import LocalMigration, read_migrations
from actions.prisma_table import MigrationRow, read_rows


@dataclass
class FailedMigration:
    """A migration whose row has neither ``finished_at`` nor ``rolled_back_at``."""

    name: str
    started_at: datetime | None
    logs: str | None
    statement: str | None = None  # for non-transactional files: the statement reached
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "started_at": self.started_at.isoformat() if self.started_at else None,
                "logs": self.logs, "statement": self.statement, "attempts": self.attempts}


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[FailedMigration] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    non_transactional: list[str] = field(default_factory=list)
    last_applied: str | None = None
    applied_checksums: dict[str, str] = field(default_factory=dict)
    local: list[LocalMigration] = field(default_factory=list)
    table_exists: bool = True

    @property
    def up_to_date(self) -> bool:
        return not (self.pending or self.failed or self.modified or self.missing)

    def local_by_name(self) -> dict[str, LocalMigration]:
        return {m.name: m for m in self.local}

    def to_dict(self) -> dict[str, Any]:
        reasons = {m.name: m.non_transactional_reason for m in self.local if not m.transactional}
        return {
            "up_to_date": self.up_to_date,
            "applied": list(self.applied),
            "pending": list(self.pending),
            "failed": [f.name for f in self.failed],
            "failed_details": [f.to_dict() for f in self.failed],
            "modified": list(self.modified),
            "missing": list(self.missing),
            "rolled_back": list(self.rolled_back),
            "non_transactional": list(self.non_transactional),
            "non_transactional_reasons": {n: reasons[n] for n in self.non_transactional if n in reasons},
            "last_applied": self.last_applied,
            "table_exists": self.table_exists,
        }


def compute_status(local: list[LocalMigration], rows: list[MigrationRow], *, table_exists: bool = True
                   ) -> MigrationStatus:
    """The status from the folder and the table's rows (pure: no database)."""
    local_names = {m.name: m for m in local}
    applied_rows: dict[str, MigrationRow] = {}
    for row in rows:  # oldest first: the latest applied row of a name wins
        if row.is_applied:
            applied_rows[row.migration_name] = row
    failed = [FailedMigration(r.migration_name, r.started_at, r.logs) for r in rows if r.is_failed]
    failed_names = {f.name for f in failed}
    rolled_back_names = {r.migration_name for r in rows if r.is_rolled_back}

    applied = sorted(applied_rows, key=lambda n: (applied_rows[n].started_at, n))
    pending = [m.name for m in local if m.name not in applied_rows and m.name not in failed_names]
    modified = [n for n in applied if n in local_names and not local_names[n].matches(applied_rows[n].checksum)]
    missing = [n for n in applied if n not in local_names]
    rolled_back = sorted(n for n in rolled_back_names if n not in applied_rows and n not in failed_names)
    last = max(applied_rows.values(), key=lambda r: (r.finished_at or r.started_at, r.started_at), default=None)
    return MigrationStatus(
        applied=applied,
        pending=pending,
        failed=failed,
        modified=modified,
        missing=missing,
        rolled_back=rolled_back,
        non_transactional=[n for n in pending if not local_names[n].transactional],
        last_applied=last.migration_name if last else None,
        applied_checksums={n: r.checksum for n, r in applied_rows.items()},
        local=list(local),
        table_exists=table_exists,
    )


async def status_on(conn: asyncpg.Connection, local: list[LocalMigration]) -> MigrationStatus:
    """The status through an open connection (never creates the table)."""
    rows = await read_rows(conn)
    exists = bool(rows) or bool(await conn.fetchval("SELECT to_regclass('_prisma_migrations') IS NOT NULL"))
    return compute_status(local, rows, table_exists=exists)


async def migration_status(url: str, migrations_dir: Path, *, timeout: float = 10.0) -> MigrationStatus:
    """Compare ``migrations_dir`` with the database at ``url``; read-only."""
    local = read_migrations(Path(migrations_dir))
    async with connection(url, timeout=timeout) as conn:
        return await status_on(conn, local)
