"""The runbook's "Partial Rollback": undo the last applied migration with its inverse SQL.

    >>> plan = await plan_undo_last(url, Path("prisma/migrations"))          # doctest: +SKIP
    >>> plan.migration, plan.down_path                                       # doctest: +SKIP
    ('20240301_add_feature', PosixPath('prisma/migrations/20240301_add_feature/down.sql'))
    >>> await undo_last(url, Path("prisma/migrations"), expected_migration=plan.migration)  # doctest: +SKIP

The inverse SQL comes from ``down.sql`` (or ``rollback.sql``) in the migration's folder. It runs
under the migration advisory lock in ONE transaction together with deleting the migration's
applied row (what the runbook does by hand), with the same lock timeout and retries as deploy;
afterwards status shows the migration pending again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from actions import prisma_table
from actions.advisory_lock import migration_lock
from actions.blockers import BlockerWatch
from actions.db import close_quietly, connect, connection
from actions.errors import ActionError
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.migrations_dir import DOWN_FILES, MIGRATION_FILE, sha256_hex
from actions.prisma_table import MigrationRow
from actions.sql_runner import RunSettings, run_atomic, run_statements
from actions.sqlsplit import non_transactional_reason
from bot.config import RetryPolicy


@dataclass
class UndoPlan:
    migration: str
    down_sql: str | None
    down_path: Path | None
    transactional: bool = True
    note: str | None = None  # why there is no inverse SQL, and what to do instead

    def to_dict(self) -> dict[str, Any]:
        return {"migration": self.migration, "down_sql": self.down_sql,
                "down_path": str(self.down_path) if self.down_path else None,
                "transactional": self.transactional, "note": self.note}


@dataclass
class UndoResult:
    migration: str
    ok: bool
    duration: float
    attempts: int
    rows_deleted: int = 0
    logs: str | None = None
    statement: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"migration": self.migration, "ok": self.ok, "duration": round(self.duration, 3),
                "attempts": self.attempts, "rows_deleted": self.rows_deleted, "logs": self.logs,
                "statement": self.statement}


def _last_applied(rows: list[MigrationRow]) -> MigrationRow | None:
    applied = [r for r in rows if r.is_applied]
    return max(applied, key=lambda r: (r.finished_at or r.started_at, r.started_at), default=None)


def _plan(migrations_dir: Path, rows: list[MigrationRow]) -> UndoPlan:
    last = _last_applied(rows)
    if last is None:
        raise ActionError("nothing to roll back: no migration is recorded as applied in this database")
    name = last.migration_name
    folder = Path(migrations_dir) / name
    if not (folder / MIGRATION_FILE).is_file():
        return UndoPlan(name, None, None, note=(
            f"the folder of {name} is not in {migrations_dir}, so there is no inverse SQL: restore a backup "
            "taken before it (`/rollback ENV` to a backup) instead"))
    down = next((folder / f for f in DOWN_FILES if (folder / f).is_file()), None)
    if down is None:
        return UndoPlan(name, None, None, note=(
            f"{name} has no down.sql or rollback.sql in {folder}: write the inverse SQL there, or restore a "
            "backup taken before it"))
    try:
        sql = down.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ActionError(f"cannot read {down}: {exc}; check the file and its permissions") from None
    if not sql.strip():
        return UndoPlan(name, None, down, note=f"{down} is empty: write the inverse SQL in it first")
    return UndoPlan(name, sql, down, transactional=non_transactional_reason(sql) is None)


async def plan_undo_last(url: str, migrations_dir: Path, *, timeout: float = 10.0) -> UndoPlan:
    """The last applied migration and its inverse SQL (``down_sql`` None when there is none: see ``note``)."""
    async with connection(url, timeout=timeout) as conn:
        return _plan(Path(migrations_dir), await prisma_table.read_rows(conn))


async def undo_last(url: str, migrations_dir: Path, *, expected_migration: str, lock_timeout: float = 1.0,
                    statement_timeout: float | None = None, retry: RetryPolicy = RetryPolicy(),  # noqa: B008
                    advisory_lock_timeout: float = 10.0, on_event: EventCallback | None = None,
                    connect_timeout: float = 10.0, expected_sha256: str | None = None) -> UndoResult:
    """Run the last migration's inverse SQL and delete its applied row, atomically.

    Refuses (ActionError) when the last applied migration is no longer ``expected_migration``
    (someone deployed since the plan was approved), when its inverse SQL is not the one approved
    (``expected_sha256``) or when it has none.
    """
    settings = RunSettings(lock_timeout=lock_timeout, statement_timeout=statement_timeout, retry=retry)
    conn = await connect(url, timeout=connect_timeout)
    watch = BlockerWatch(url, timeout=connect_timeout)
    try:
        async with migration_lock(conn, timeout=advisory_lock_timeout):
            plan = _plan(Path(migrations_dir), await prisma_table.read_rows(conn))
            if plan.migration != expected_migration:
                raise ActionError(
                    f"rollback refused: the last applied migration is now {plan.migration}, not "
                    f"{expected_migration} as planned; ask for the rollback again so approvers see what it undoes",
                    code="expected_mismatch")
            if plan.down_sql is None:
                raise ActionError(f"cannot roll back {plan.migration}: {plan.note}", code="no_down_sql")
            if expected_sha256 is not None and sha256_hex(plan.down_sql.encode()) != expected_sha256:
                raise ActionError(
                    f"rollback refused: the inverse SQL of {plan.migration} changed on disk since it was shown "
                    "for approval; ask for the rollback again so approvers see what runs", code="expected_mismatch")
            deleted = 0

            async def delete_row(c: asyncpg.Connection) -> None:
                nonlocal deleted
                deleted = await prisma_table.delete_applied(c, plan.migration)

            await emit_safely(on_event, DeployEvent("started", plan.migration))
            if plan.transactional:
                outcome = await run_atomic(conn, plan.down_sql, name=plan.migration, settings=settings,
                                           watch=watch, on_event=on_event, in_transaction=delete_row)
            else:
                # CONCURRENTLY & co cannot share a transaction: statements first, then the row
                outcome = await run_statements(conn, plan.down_sql, name=plan.migration, settings=settings,
                                               watch=watch, on_event=on_event, after=delete_row)
            if outcome.ok:
                await emit_safely(on_event, DeployEvent("finished", plan.migration, attempt=outcome.attempts,
                                                        duration=outcome.duration))
            else:
                await emit_safely(on_event, DeployEvent("failed", plan.migration, attempt=outcome.attempts,
                                                        duration=outcome.duration, blockers=outcome.blockers,
                                                        logs=outcome.logs, statement=outcome.statement))
            return UndoResult(plan.migration, outcome.ok, outcome.duration, outcome.attempts, deleted,
                              outcome.logs, outcome.statement)
    finally:
        await watch.close()
        await close_quietly(conn)
