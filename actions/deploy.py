"""Apply pending migrations the way ``prisma migrate deploy`` records them, only safer.

    >>> result = await deploy(env.migration_url, env.migrations_dir, on_event=print)   # doctest: +SKIP
    >>> [m.name for m in result.applied], result.failed                                 # doctest: +SKIP
    (['20240301_add_index'], None)

Safer than Prisma: a bounded wait for the advisory lock that names its holder, no attempt while
a session holds a conflicting lock and a lock timeout with retries, so application queries never
queue for long behind a migration, edited files and
failed rows refused up front, ``expected`` guarding an approved plan, clean stop between
migrations, and files that cannot run in a transaction applied statement by statement.

Each file is one round trip: its started row (committed on its own, as Prisma writes it first),
then ``BEGIN``, the lock and statement timeouts, the lock look, the file, its row's finish and
``COMMIT`` in one simple-protocol string. Consecutive files that only create new objects (they
wait for nobody and take milliseconds: :func:`actions.lock_look.only_new_objects`) share one
round trip, up to :data:`BATCH_FILES`, each still with its own started row and transaction; a stop
request (``should_continue``) is then seen between batches rather than between those files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from actions import prisma_table
from actions.advisory_lock import migration_lock
from actions.blockers import Blocker, BlockerWatch
from actions.db import CONNECTION_ERRORS, close_quietly, connect, database_name, lost_connection_error
from actions.errors import ActionError
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.lock_look import only_new_objects
from actions.migrations_dir import LocalMigration, read_migrations
from actions.sql_runner import (
    PROGRESS_PREFIX,
    ConnectionLost,
    RunOutcome,
    RunSettings,
    StatementProgress,
    apply_session_settings,
    attempt_prefix,
    describe_db_error,
    rollback_quietly,
    run_atomic,
    run_statements,
)
from actions.status import FailedMigration, MigrationStatus, status_on
from bot.config import RetryPolicy

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


def refuse_unsafe_state(status: MigrationStatus, env_name: str = "ENV") -> None:
    """Raise ActionError when deploying now would be unsafe (failed rows, edited files)."""
    if status.failed:
        details = "; ".join(
            f"{f.name} (started {f.started_at:%Y-%m-%d %H:%M:%S%z}"
            + (f", error: {' '.join((f.logs or '').split())[:300]}" if f.logs else "") + ")"
            for f in status.failed)
        hints = "; ".join(f.next_step(env_name) for f in status.failed)
        raise ActionError(
            f"deploy refused (Prisma P3009): failed migration(s) in the database: {details}. "
            f"Check what the failed migration changed, then run {hints}", code="P3009")
    if status.modified:
        names = ", ".join(status.modified)
        raise ActionError(
            f"deploy refused: migration file(s) {names} were edited after being applied (checksum differs). "
            "Restore the original file(s) from version control and put the change in a new migration",
            code="modified")


async def _run_one(conn: asyncpg.Connection, url: str, migration: LocalMigration, settings: RunSettings,
                   watch: BlockerWatch, on_event: EventCallback | None, connect_timeout: float,
                   env_name: str, row_id: str | None = None) -> tuple[bool, AppliedMigration | None,
                                                                   FailedMigration | None]:
    # The session settings were applied (and a refused value reported) before the first migration;
    # each file's transaction sets its own lock and statement timeouts. ``row_id``: the started row
    # is already committed (a batch stopped at this file), else it is written first.
    started = ""
    if row_id is None:
        row_id = prisma_table.new_id()
        started = prisma_table.started_sql(row_id, migration.name, migration.checksum)
        await emit_safely(on_event, DeployEvent("started", migration.name))
    pid = conn.get_server_pid()
    finish = prisma_table.finish_sql(row_id)

    async def mark_finished(c: asyncpg.Connection) -> None:
        await c.execute(finish)

    async def record_progress(statements: int) -> None:  # what `status` reads if this process is killed
        await conn.execute(prisma_table.progress_sql(row_id, statements))

    try:
        if migration.transactional:
            # one round trip: the started row (committed on its own, as Prisma writes it first), then the
            # file, the row's update and COMMIT in the migration's transaction
            outcome = await run_atomic(conn, migration.sql, name=migration.name, settings=settings, watch=watch,
                                       on_event=on_event, before_commit_sql=finish, first_sql=started)
        else:
            if started:
                await conn.execute(started)
            outcome = await run_statements(conn, migration.sql, name=migration.name, settings=settings,
                                           watch=watch, on_event=on_event, after=mark_finished,
                                           ran=record_progress)
    except ConnectionLost as lost:
        raise await _after_lost_connection(url, [(migration, row_id)], pid, lost.cause, lost.progress,
                                           connect_timeout, env_name) from None
    if outcome.ok:
        applied = AppliedMigration(migration.name, outcome.duration, outcome.attempts, migration.transactional)
        await emit_safely(on_event, DeployEvent("finished", migration.name, attempt=outcome.attempts,
                                                duration=outcome.duration, blockers=outcome.waited_for,
                                                waited=outcome.waited or None))
        return True, applied, None
    return False, None, await _record_failure(conn, migration, row_id, outcome, on_event)


async def _record_failure(conn: asyncpg.Connection, migration: LocalMigration, row_id: str, outcome: RunOutcome,
                          on_event: EventCallback | None) -> FailedMigration:
    """Keep ``row_id`` failed with the outcome's logs (as Prisma does); the failure, reported."""
    logs = outcome.logs or "unknown error"
    if not await prisma_table.mark_failed(conn, row_id, logs):
        # the round trip failed before its started row was written: nothing of the file ran either
        raise ActionError(f"could not record that {migration.name} starts in _prisma_migrations ({logs}); "
                          "nothing of it was applied: check the table and the server, then deploy again",
                          code="started_row")
    failed = FailedMigration(migration.name, await prisma_table.started_at(conn, row_id), logs, outcome.statement,
                             outcome.attempts, outcome.progress)
    await emit_safely(on_event, DeployEvent("failed", migration.name, attempt=outcome.attempts,
                                            duration=outcome.duration, blockers=outcome.blockers, logs=logs,
                                            statement=outcome.statement, waited=outcome.waited or None))
    return failed


#: Files that only create new objects (:func:`actions.lock_look.only_new_objects`) are sent up to this
#: many (and this many characters) in one round trip, each still its own started row and transaction.
BATCH_FILES = 64
BATCH_CHARS = 256 * 1024


def _batch(pending: list[LocalMigration]) -> list[LocalMigration]:
    """The files at the head of ``pending`` that may share a round trip (fewer than 2: none)."""
    batch: list[LocalMigration] = []
    size = 0
    for migration in pending[:BATCH_FILES]:
        size += len(migration.sql)
        if not migration.transactional or (batch and size > BATCH_CHARS) or not only_new_objects(migration.sql):
            break
        batch.append(migration)
    return batch if len(batch) > 1 else []


async def _run_batch(conn: asyncpg.Connection, url: str, batch: list[LocalMigration], settings: RunSettings,
                     watch: BlockerWatch, on_event: EventCallback | None, connect_timeout: float,
                     env_name: str) -> tuple[list[AppliedMigration], FailedMigration | None,
                                             tuple[LocalMigration, str] | None]:
    """Apply ``batch`` in one simple-protocol round trip; (applied, failed, the file to go on with).

    Each file is written exactly as alone: its started row committed on its own first, then
    ``BEGIN``, the lock and statement timeouts, the file, its row's finish and ``COMMIT``. A failing
    statement stops the whole string there (PostgreSQL skips the rest of a simple query after an
    error): the files before it are committed and recorded, the failing one has its started row
    and nothing else, the ones after it did not start. The rows tell which is which. A lock timeout
    is handed back (the last item) to be retried alone, looking before each attempt.
    """
    ids = [prisma_table.new_id() for _ in batch]
    parts: list[str] = []
    offsets: list[int] = []  # where each file's SQL starts in the string (error positions count from there)
    prefix = attempt_prefix(settings)
    at = 0
    for migration, row_id in zip(batch, ids, strict=True):
        head = f"{prisma_table.started_sql(row_id, migration.name, migration.checksum)};\n{prefix}"
        body = f"{migration.sql}\n;\n{prisma_table.finish_sql(row_id)};\nCOMMIT;\n"
        offsets.append(at + len(head))
        parts.append(head + body)
        at += len(head) + len(body)
    pid = conn.get_server_pid()
    error: asyncpg.PostgresError | None = None
    t0 = time.monotonic()
    try:
        async with watch.watching(pid):
            await conn.execute("".join(parts))
    except CONNECTION_ERRORS as exc:
        if conn.is_closed() or not isinstance(exc, asyncpg.PostgresError):
            raise await _after_lost_connection(url, list(zip(batch, ids, strict=True)), pid, exc, None,
                                               connect_timeout, env_name) from None
        error = exc
        await rollback_quietly(conn)
    took = time.monotonic() - t0
    rows = {r.id: r for r in await prisma_table.read_rows_by_id(conn, ids)}
    applied: list[AppliedMigration] = []
    for migration, row_id in zip(batch, ids, strict=True):
        row = rows.get(row_id)
        if row is None or row.finished_at is None:
            break
        duration = (row.finished_at - row.started_at).total_seconds() if error else took / len(batch)
        applied.append(AppliedMigration(migration.name, duration))
        await emit_safely(on_event, DeployEvent("started", migration.name))
        await emit_safely(on_event, DeployEvent("finished", migration.name, duration=duration))
    if error is None and len(applied) == len(batch):
        return applied, None, None
    stopped, row_id = batch[len(applied)], ids[len(applied)]
    cause = error or RuntimeError("the batch ended without an error but its row is not finished")
    if row_id not in rows:  # its started row was not written: nothing of the file ran either
        logs = describe_db_error(cause, "")
        raise ActionError(f"could not record that {stopped.name} starts in _prisma_migrations ({logs}); "
                          "nothing of it was applied: check the table and the server, then deploy again",
                          code="started_row")
    await emit_safely(on_event, DeployEvent("started", stopped.name))
    if isinstance(error, asyncpg.LockNotAvailableError):  # nothing of it changed: retry it alone
        return applied, None, (stopped, row_id)
    outcome = RunOutcome(False, 1, took, describe_db_error(cause, stopped.sql, offset=offsets[len(applied)]))
    return applied, await _record_failure(conn, stopped, row_id, outcome, on_event), None


# How long a terminated backend may take to leave pg_stat_activity before we call it still running.
GONE_WAIT = 5.0


async def _after_lost_connection(url: str, sent: list[tuple[LocalMigration, str]], old_pid: int,
                                 cause: BaseException, progress: StatementProgress | None,
                                 timeout: float, env_name: str) -> ActionError:
    """Find out on a new connection what the lost one left behind; the ActionError that tells it.

    ``sent``: the files (with their row ids) of the lost round trip, in order: one, or a batch.
    The rows decide: a transactional file marks its row finished inside its own transaction, so a
    finished row means it committed and an unfinished one (its backend gone) means it was rolled
    back; in a batch the first file without a finished row is the one that was running, and a file
    without a row did not start. A backend still alive may still be running it (the answer was
    lost, not the session).
    """
    migration, row_id = sent[0]
    name = migration.name
    reason = " ".join((getattr(cause, "message", None) or str(cause) or type(cause).__name__).split())
    try:
        conn = await connect(url, timeout=timeout)
    except ActionError as again:
        names = ", ".join(m.name for m, _ in sent)
        return ActionError(
            f"lost the database connection while applying {names} ({reason}); the server cannot be reached now "
            f"({again.message}), so whether {'they' if len(sent) > 1 else 'it'} committed is not known yet and "
            "the rows in _prisma_migrations are unfinished: when the server is back, run `migrabot "
            f"status {env_name}`, which tells", code="connection_lost")
    try:
        alive = await _wait_gone(conn, old_pid, GONE_WAIT)
        rows = {r.id: r for r in await prisma_table.read_rows_by_id(conn, [i for _, i in sent])}
        done = [m.name for m, i in sent if i in rows and rows[i].finished_at is not None]
        if len(done) < len(sent):
            migration, row_id = sent[len(done)]
        name = migration.name
        what = f"lost the database connection while applying {name} ({reason})"
        if len(done) == len(sent):
            return ActionError(f"{what}, but only after it committed: {name} is applied and recorded; the "
                               "migrations after it did not run: deploy again", code="connection_lost")
        before = f" ({', '.join(done)} before it committed and are recorded)" if done else ""
        if row_id not in rows and not alive:
            return ActionError(f"{what}{before}; {name} had not started (it has no row): nothing of it was applied. "
                               "Next: deploy again", code="connection_lost")
        what += before
        if alive:
            return ActionError(
                f"{what}; the server is still running it in pid {old_pid}: `migrabot status {env_name}` shows it as "
                f"running until it ends (end it early with SELECT pg_terminate_backend({old_pid}))",
                code="connection_lost")
        if migration.transactional:
            state = ("it ran in one transaction, which the server rolled back: none of its changes are in the "
                     "database")
            await prisma_table.mark_failed(conn, row_id, f"{what}; {state}.")
            next_step = f"run `migrabot resolve {env_name} --rolled-back {name}`, then deploy again (it runs anew)"
        else:
            progress = progress or StatementProgress(0)
            state = progress.describe()
            await prisma_table.mark_failed(conn, row_id, f"{what}.\n{PROGRESS_PREFIX}{state}.")
            next_step = FailedMigration(name, None, None, progress=progress).next_step(env_name)
        return ActionError(f"{what}; {state}; its row is marked failed. Next: {next_step}", code="connection_lost")
    except CONNECTION_ERRORS as exc:
        return lost_connection_error(exc, f"checking what the lost connection left of {name}",
                                     f"{name}'s row in _prisma_migrations is unfinished",
                                     f"run `migrabot status {env_name}` when the server answers again")
    finally:
        await close_quietly(conn)


async def _wait_gone(conn: asyncpg.Connection, pid: int, timeout: float) -> bool:
    """Wait until backend ``pid`` has left; True when it is still there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid):
        if time.monotonic() >= deadline:
            return True
        await asyncio.sleep(0.1)
    return False


async def deploy(url: str, migrations_dir: Path, *, lock_timeout: float = 1.0,
                 statement_timeout: float | None = None, retry: RetryPolicy = RetryPolicy(),  # noqa: B008
                 advisory_lock_timeout: float = 10.0, on_event: Callable[[DeployEvent], Any] | None = None,
                 dry_run: bool = False, should_continue: Callable[[], bool] | None = None,
                 expected: list[str] | None = None, expected_checksums: dict[str, str] | None = None,
                 connect_timeout: float = 10.0, env_name: str = "ENV") -> DeployResult:
    """Apply every pending migration in name order, stopping at the first failure.

    Raises ActionError (before changing anything) when a migration failed earlier, a file was
    edited after being applied, the pending list differs from ``expected`` (or a file's checksum from
    ``expected_checksums``: the SQL approvers reviewed is the SQL that runs), or the advisory lock
    stays held longer than ``advisory_lock_timeout``. ``env_name`` names the environment in the
    commands messages suggest. A connection lost mid-migration is examined on a new connection
    and raised as ActionError saying what is committed and what to do.
    """
    local = read_migrations(Path(migrations_dir))
    settings = RunSettings(lock_timeout=lock_timeout, statement_timeout=statement_timeout, retry=retry)
    conn = await connect(url, timeout=connect_timeout)
    watch = BlockerWatch(url, timeout=connect_timeout)

    async def waiting(holders: list[Blocker]) -> None:
        await emit_safely(on_event, DeployEvent("waiting_for_lock", None, blockers=holders))

    result: DeployResult | None = None
    try:
        async with migration_lock(conn, timeout=advisory_lock_timeout, on_wait=waiting):
            status = await status_on(conn, local)
            refuse_unsafe_state(status, env_name)
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
            # before anything is written (and in a dry run too): settings the server refuses stop here
            await apply_session_settings(conn, settings)
            if dry_run or not pending:
                return result
            if not status.table_exists:
                await prisma_table.ensure_table(conn)
            todo = [by_name[name] for name in pending]
            while todo:
                if should_continue is not None and not _safe_bool(should_continue):
                    result.aborted = True
                    break
                row_id: str | None = None
                batch = _batch(todo)
                if batch:
                    batch_done, result.failed, go_on = await _run_batch(conn, url, batch, settings, watch, on_event,
                                                                  connect_timeout, env_name)
                    result.applied.extend(batch_done)
                    del todo[:len(batch_done)]
                    if go_on is None:
                        if result.failed:
                            break
                        continue
                    row_id = go_on[1]
                ok, applied, failed = await _run_one(conn, url, todo.pop(0), settings, watch, on_event,
                                                     connect_timeout, env_name, row_id)
                if ok and applied:
                    result.applied.append(applied)
                else:
                    result.failed = failed
                    break
            return result
    except CONNECTION_ERRORS as exc:  # our own bookkeeping queries, outside any migration's SQL
        done = ", ".join(m.name for m in result.applied) if result else ""
        raise lost_connection_error(
            exc, f"deploying to {database_name(url)}",
            f"applied before it: {done}" if done else "no migration was applied by this run",
            f"run `migrabot status {env_name}` to see where things stand, then deploy again", closed=conn.is_closed()
        ) from None
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
