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

from actions.advisory_lock import lock_holders
from actions.db import CONNECTION_ERRORS, connection, database_name, lost_connection_error
from actions.migrations_dir import LocalMigration, read_migrations
from actions.prisma_table import MigrationRow, read_rows
from actions.sqlsplit import split_sql
from actions.statement_progress import StatementProgress, partly_applied


@dataclass
class FailedMigration:
    """A migration whose row has neither ``finished_at`` nor ``rolled_back_at``."""

    name: str
    started_at: datetime | None
    logs: str | None
    statement: str | None = None  # for non-transactional files: the statement reached
    attempts: int = 0
    progress: StatementProgress | None = None  # for non-transactional files, when this run applied it

    @property
    def partly_applied(self) -> str | None:
        """What of the file is committed ("statements 1-2 of 4 are committed"), or None when nothing is."""
        if self.progress is not None:
            return self.progress.describe().split(";")[0] if self.progress.committed else None
        return partly_applied(self.logs)

    def next_step(self, env: str = "ENV") -> str:
        """What to do about it, true to what is in the database."""
        if self.partly_applied:
            return (f"{self.name} is partly applied ({self.partly_applied}), so running it again would fail on "
                    f"what already ran: complete the remaining statements by hand and run `migrabot resolve {env} "
                    f"--applied {self.name}`, or undo the committed ones by hand and run `migrabot resolve {env} "
                    f"--rolled-back {self.name}` (deploy then runs the whole file again)")
        return (f"`migrabot resolve {env} --rolled-back {self.name}` if its changes are not in the database (then "
                f"deploy runs it again), or `migrabot resolve {env} --applied {self.name}` if you completed it by hand")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "started_at": self.started_at.isoformat() if self.started_at else None,
                "logs": self.logs, "statement": self.statement, "attempts": self.attempts,
                "progress": self.progress.to_dict() if self.progress else None,
                "partly_applied": self.partly_applied}


@dataclass
class RunningMigration:
    """An unfinished row while another session holds the migration lock: it is being applied right now."""

    name: str
    started_at: datetime | None
    pid: int
    application: str | None = None

    def describe(self) -> str:
        who = f", {self.application}" if self.application else ""
        since = f", started {self.started_at:%Y-%m-%d %H:%M:%S%z}" if self.started_at else ""
        return f"{self.name}: still running in pid {self.pid}{who}{since}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "application": self.application,
                "started_at": self.started_at.isoformat() if self.started_at else None}


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[FailedMigration] = field(default_factory=list)
    running: list[RunningMigration] = field(default_factory=list)
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
        return not (self.pending or self.failed or self.running or self.modified or self.missing)

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
            "running": [r.to_dict() for r in self.running],
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
    failed = [FailedMigration(r.migration_name, r.started_at, r.logs, progress=_recorded_progress(local_names, r))
              for r in rows if r.is_failed]
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


def _recorded_progress(local: dict[str, LocalMigration], row: MigrationRow) -> StatementProgress | None:
    """How far a file run statement by statement got when its process stopped without a word.

    The engine counts the statements that ran in ``applied_steps_count`` as it goes
    (``prisma_table.progress_sql``); a row left without logs keeps that count. The next
    statement was running when the process stopped: whether it took effect is unknown.
    """
    migration = local.get(row.migration_name)
    if row.logs or migration is None or migration.transactional:
        return None
    total = len(split_sql(migration.sql))
    ran = max(0, min(row.applied_steps_count, total))
    return StatementProgress(total, committed=list(range(1, ran + 1)), failed=ran + 1 if ran < total else None,
                             interrupted=ran < total)


async def status_on(conn: asyncpg.Connection, local: list[LocalMigration]) -> MigrationStatus:
    """The status through an open connection (never creates the table).

    An unfinished row without logs while another session holds the migration lock is being
    applied right now: it is reported under ``running`` (with that session's pid), not as failed.
    """
    rows = await read_rows(conn)
    exists = bool(rows) or bool(await conn.fetchval("SELECT to_regclass('_prisma_migrations') IS NOT NULL"))
    status = compute_status(local, rows, table_exists=exists)
    unfinished = [f for f in status.failed if not f.logs]
    if unfinished:
        holders = await lock_holders(conn)
        if holders:
            holder = holders[0]
            status.running = [RunningMigration(f.name, f.started_at, holder.pid, holder.application_name or None)
                              for f in unfinished]
            status.failed = [f for f in status.failed if f.logs]
    return status


async def migration_status(url: str, migrations_dir: Path, *, timeout: float = 10.0) -> MigrationStatus:
    """Compare ``migrations_dir`` with the database at ``url``; read-only."""
    local = read_migrations(Path(migrations_dir))
    async with connection(url, timeout=timeout) as conn:
        try:
            return await status_on(conn, local)
        except CONNECTION_ERRORS as exc:
            raise lost_connection_error(exc, f"reading the migration status of {database_name(url)}",
                                        "nothing was changed (status only reads)",
                                        "check that the server is up (`migrabot health ENV`) and run status again",
                                        closed=conn.is_closed()) from None
