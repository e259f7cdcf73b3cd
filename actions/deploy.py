"""Apply pending migrations the way ``prisma migrate deploy`` records them, only safer.

    >>> result = await deploy(env.migration_url, env.migrations_dir, on_event=print)   # doctest: +SKIP
    >>> [m.name for m in result.applied], result.failed                                 # doctest: +SKIP
    (['20240301_add_index'], None)

Safer than Prisma: a bounded wait for the advisory lock that names its holder, a lock timeout
with retries so application queries never queue for long behind a migration, edited files and
failed rows refused up front, ``expected`` guarding an approved plan, clean stop between
migrations, and files that cannot run in a transaction applied statement by statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from actions import prisma_table
from actions.advisory_lock import migration_lock
from actions.blockers import Blocker, BlockerWatch
from actions.db import close_quietly, connect
from actions.errors import ActionError
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.migrations_dir import LocalMigration, read_migrations
from actions.sql_runner import RunSettings, run_atomic, run_statements
from actions.status import FailedMigration, MigrationStatus, status_on
from bot.config import RetryPolicy
from bot.redact import redact

__all__ = ["AppliedMigration", "Blocker", "DeployEvent", "DeployResult", "FailedMigration", "deploy",
           "refuse_unsafe_state"]

log = logging.getLogger(__name__)


@dataclass
class AppliedMigration:
    name: str
    duration: float
    attempts: int = 1
    transactional: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "duration": round(self.duration, 3), "attempts": self.attempts,
                "transactional": self.transactional}


@dataclass
class DeployResult:
    applied: list[AppliedMigration] = field(default_factory=list)
    failed: FailedMigration | None = None
    aborted: bool = False
    dry_run: bool = False
    pending: list[str] = field(default_factory=list)  # what was (or would be) applied
    non_transactional: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.aborted

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "applied": [m.to_dict() for m in self.applied],
                "failed": self.failed.to_dict() if self.failed else None, "aborted": self.aborted,
                "dry_run": self.dry_run, "pending": list(self.pending),
                "non_transactional": list(self.non_transactional), "missing": list(self.missing)}


def _resolve_hint(name: str) -> str:
    return (f"`migrabot resolve ENV --rolled-back {name}` if its changes are not in the database (then deploy "
            f"runs it again), or `migrabot resolve ENV --applied {name}` if you completed it by hand")


def refuse_unsafe_state(status: MigrationStatus) -> None:
    """Raise ActionError when deploying now would be unsafe (failed rows, edited files)."""
    if status.failed:
        details = "; ".join(
            f"{f.name} (started {f.started_at:%Y-%m-%d %H:%M:%S%z}"
            + (f", error: {' '.join((f.logs or '').split())[:300]}" if f.logs else "") + ")"
            for f in status.failed)
        hints = "; ".join(_resolve_hint(f.name) for f in status.failed)
        raise ActionError(
            f"deploy refused (Prisma P3009): failed migration(s) in the database: {details}. "
            f"Check what the failed migration changed, then run {hints}", code="P3009")
    if status.modified:
        names = ", ".join(status.modified)
        raise ActionError(
            f"deploy refused: migration file(s) {names} were edited after being applied (checksum differs). "
            "Restore the original file(s) from version control and put the change in a new migration",
            code="modified")


async def _run_one(conn: asyncpg.Connection, migration: LocalMigration, settings: RunSettings,
                   watch: BlockerWatch, on_event: EventCallback | None) -> tuple[bool, AppliedMigration | None,
                                                                               FailedMigration | None]:
    row_id = await prisma_table.insert_started(conn, migration.name, migration.checksum)
    await emit_safely(on_event, DeployEvent("started", migration.name))
    finish = prisma_table.finish_sql(row_id)

    async def mark_finished(c: asyncpg.Connection) -> None:
        await c.execute(finish)

    try:
        if migration.transactional:
            outcome = await run_atomic(conn, migration.sql, name=migration.name, settings=settings, watch=watch,
                                       on_event=on_event, before_commit_sql=finish)
        else:
            outcome = await run_statements(conn, migration.sql, name=migration.name, settings=settings,
                                           watch=watch, on_event=on_event, after=mark_finished)
    except (asyncpg.InterfaceError, OSError, ConnectionError) as exc:
        raise ActionError(
            f"lost the database connection while applying {migration.name} ({redact(str(exc))}); its row is "
            "left failed: run `migrabot status ENV` and resolve it before deploying again") from None
    if outcome.ok:
        applied = AppliedMigration(migration.name, outcome.duration, outcome.attempts, migration.transactional)
        await emit_safely(on_event, DeployEvent("finished", migration.name, attempt=outcome.attempts,
                                                duration=outcome.duration))
        return True, applied, None
    logs = outcome.logs or "unknown error"
    await prisma_table.mark_failed(conn, row_id, logs)
    failed = FailedMigration(migration.name, await prisma_table.started_at(conn, row_id), logs, outcome.statement,
                             outcome.attempts)
    await emit_safely(on_event, DeployEvent("failed", migration.name, attempt=outcome.attempts,
                                            duration=outcome.duration, blockers=outcome.blockers, logs=logs,
                                            statement=outcome.statement))
    return False, None, failed


async def deploy(url: str, migrations_dir: Path, *, lock_timeout: float = 1.0,
                 statement_timeout: float | None = None, retry: RetryPolicy = RetryPolicy(),  # noqa: B008
                 advisory_lock_timeout: float = 10.0, on_event: Callable[[DeployEvent], Any] | None = None,
                 dry_run: bool = False, should_continue: Callable[[], bool] | None = None,
                 expected: list[str] | None = None, expected_checksums: dict[str, str] | None = None,
                 connect_timeout: float = 10.0) -> DeployResult:
    """Apply every pending migration in name order, stopping at the first failure.

    Raises ActionError (before changing anything) when a migration failed earlier, a file was
    edited after being applied, the pending list differs from ``expected`` (or a file's checksum from
    ``expected_checksums``: the SQL approvers reviewed is the SQL that runs), or the advisory lock
    stays held longer than ``advisory_lock_timeout``.
    """
    local = read_migrations(Path(migrations_dir))
    settings = RunSettings(lock_timeout=lock_timeout, statement_timeout=statement_timeout, retry=retry)
    conn = await connect(url, timeout=connect_timeout)
    watch = BlockerWatch(url, timeout=connect_timeout)

    async def waiting(holders: list[Blocker]) -> None:
        await emit_safely(on_event, DeployEvent("waiting_for_lock", None, blockers=holders))

    try:
        async with migration_lock(conn, timeout=advisory_lock_timeout, on_wait=waiting):
            status = await status_on(conn, local)
            refuse_unsafe_state(status)
            by_name = status.local_by_name()
            pending = list(status.pending)
            if expected is not None and list(expected) != pending:
                raise ActionError(
                    "deploy refused: the pending migrations changed since they were shown for approval "
                    f"(approved: {', '.join(expected) or 'none'}; pending now: {', '.join(pending) or 'none'}). "
                    "Request the deploy again so approvers see the current list", code="expected_mismatch")
            changed = [n for n, checksum in (expected_checksums or {}).items()
                       if n in by_name and not by_name[n].matches(checksum)]
            if changed:
                raise ActionError(
                    f"deploy refused: {', '.join(changed)} changed on disk since it was shown for approval (its "
                    "checksum differs), so what would run is not what was reviewed. Request the deploy again",
                    code="expected_mismatch")
            result = DeployResult(dry_run=dry_run, pending=pending, non_transactional=list(status.non_transactional),
                                  missing=list(status.missing))
            if dry_run or not pending:
                return result
            if not status.table_exists:
                await prisma_table.ensure_table(conn)
            for name in pending:
                if should_continue is not None and not _safe_bool(should_continue):
                    result.aborted = True
                    break
                ok, applied, failed = await _run_one(conn, by_name[name], settings, watch, on_event)
                if ok and applied:
                    result.applied.append(applied)
                else:
                    result.failed = failed
                    break
            return result
    finally:
        await watch.close()
        await close_quietly(conn)


def _safe_bool(check: Callable[[], bool]) -> bool:
    """``should_continue`` that raises means "stop": stopping between migrations is always safe."""
    try:
        return bool(check())
    except Exception:
        log.exception("should_continue raised; stopping before the next migration")
        return False
