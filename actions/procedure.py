"""The runbook's migration script (``migrate-production.sh``), step by step, for Slack runs and the CLI alike.

pre-flight → verified backup (``pg_dump``) → status → each migration → verification (status,
connectivity, health URL). No migration is applied unless the backup verified (or the
environment's policy lets this run go without one). Progress goes to a :class:`Recorder`: the
bot writes each step to its state and re-renders the run message; the CLI prints it.

    outcome = await run_migrate(env, ["20240101_init"], {"20240101_init": "ab12…"}, recorder,
                                requested_by="cli:alice", reason="cli deploy")
    outcome.applied, outcome.backup_id

A step that fails raises :class:`StepFailed` with what was done so far in ``result``
(``applied``, ``backup_id``, and for a failed migration ``failed_migration`` and ``logs``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from actions.after_migrate import analyze_tables, compared_with_rehearsal, run_verify_queries, tables_to_analyze
from actions.backup import BackupProgress, preflight, take_backup
from actions.db import ping
from actions.deploy import DeployResult, deploy, refuse_unsafe_state
from actions.errors import ActionError
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.faults import fault_point
from actions.health import check_health_url
from actions.humanize import duration, size
from actions.rehearsal import latest_rehearsal
from actions.status import migration_status
from bot.config import Environment


class StepFailed(Exception):
    """A step of a run failed; the message is the sentence people read, ``result`` what was done."""

    def __init__(self, message: str, *, result: dict[str, Any] | None = None,
                 deploy: DeployResult | None = None) -> None:
        super().__init__(message)
        self.result = result or {}
        self.deploy = deploy  # what the engine did, when the failure came from applying


class Recorder(Protocol):
    """Where a procedure's progress goes (the bot's state and run message, or the terminal)."""

    def plan(self, steps: list[tuple[str, str]]) -> None:
        """The steps to come, (name, label) in order, before any starts."""

    def step(self, name: str, label: str, position: int) -> AbstractAsyncContextManager[dict[str, str]]:
        """A step from start to finish; the yielded ``note["detail"]`` is its result in words.

        An :class:`ActionError` or :class:`StepFailed` inside marks it failed and leaves as StepFailed.
        """

    def start(self, name: str, label: str, position: int) -> None: ...

    def finish(self, name: str, status: str, detail: str = "") -> None: ...

    def note(self, name: str, detail: str) -> None:
        """Progress inside a running step (bytes written, a retry)."""


@dataclass
class MigrateOutcome:
    applied: list[str] = field(default_factory=list)
    backup_id: str | None = None
    verification: str = ""
    aborted: bool = False
    duration: float = 0.0
    deploy: DeployResult | None = None  # the engine's own account (timings, attempts) once it ran

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "backup_id": self.backup_id, "verification": self.verification,
                "aborted": self.aborted, "duration": self.duration}


def migrate_steps(names: list[str]) -> list[tuple[str, str]]:
    """The steps of a migration run, (name, label), in order."""
    return [("preflight", "Pre-flight checks"), ("backup", "Backup (pg_dump)"), ("status", "Migration status"),
            *((f"migration:{n}", f"Apply `{n}`") for n in names), ("verify", "Verification")]


async def run_migrate(env: Environment, names: list[str] | None, checksums: dict[str, str] | None, rec: Recorder, *,
                      requested_by: str, reason: str, backup: bool = True,
                      should_continue: Callable[[], bool] = lambda: True,
                      on_event: EventCallback | None = None,
                      on_backup: Callable[[str], None] | None = None) -> MigrateOutcome:
    """Run the runbook's steps on ``env`` for exactly ``names`` with these checksums (what approvers saw), or
    with ``names=None`` for whatever is pending once the migration lock is held (``prisma migrate deploy``).

    ``should_continue`` is asked between steps and between migrations (Abort, SIGTERM): a run
    never stops half-way through a migration. ``backup=False`` only where the policy allows it.
    """
    started = time.monotonic()
    outcome = MigrateOutcome()
    rec.plan(migrate_steps(names or []))
    try:
        await _preflight(env, rec)
        if not should_continue():
            return _aborted(outcome, started)
        if backup:
            outcome.backup_id = await verified_backup(env, rec, 1, reason=reason, requested_by=requested_by)
            if on_backup is not None:
                on_backup(outcome.backup_id)
        else:
            rec.finish("backup", "skipped", "no backup: the environment's policy allows runs without one")
        if not should_continue():
            return _aborted(outcome, started)
        await _status(env, rec, names)
        outcome.deploy = await _apply(env, rec, names, checksums, should_continue, on_event)
        outcome.applied = [a.name for a in outcome.deploy.applied]
        stopped_early = names is not None and len(outcome.applied) < len(names)
        if outcome.deploy.aborted or (stopped_early and not should_continue()):
            return _aborted(outcome, started)
        outcome.verification = await _verify(env, rec, 3 + len(names if names is not None else outcome.applied),
                                             applied=outcome.applied)
    except StepFailed as exc:
        exc.result.setdefault("applied", outcome.applied)
        exc.result.setdefault("backup_id", outcome.backup_id)
        raise
    outcome.duration = time.monotonic() - started
    return outcome


def _aborted(outcome: MigrateOutcome, started: float) -> MigrateOutcome:
    outcome.aborted = True
    outcome.duration = time.monotonic() - started
    return outcome


async def _preflight(env: Environment, rec: Recorder) -> None:
    """The runbook's pre-flight: the database answers; plus the backup pre-flight."""
    async with rec.step("preflight", "Pre-flight checks", 0) as note:
        fault_point("deploy.preflight")
        await ping(env.database_url, timeout=env.connect_timeout)
        checks = await preflight(env.migration_url, env.backup_dir, env.name, free_margin=env.backup_free_margin)
        failed = [c for c in checks if not c.ok]
        if failed:
            note["detail"] = "; ".join(c.message for c in failed)
            raise StepFailed(f"pre-flight failed: {note['detail']}")
        note["detail"] = "database reachable, backup pre-flight passed"


async def verified_backup(env: Environment, rec: Recorder, position: int, *, reason: str, requested_by: str) -> str:
    """A verified backup before any schema change; its id (StepFailed, nothing changed, otherwise)."""
    async with rec.step("backup", "Backup (pg_dump)", position) as note:
        fault_point("deploy.backup")
        def progress(p: BackupProgress) -> None:
            rec.note("backup", f"{size(p.bytes_written)} written, {duration(p.elapsed)}")

        try:
            info = await take_backup(env.migration_url, env.backup_dir, env.name, reason=reason,
                                     requested_by=requested_by, jobs=env.backup_jobs,
                                     free_margin=env.backup_free_margin, on_progress=progress)
        except ActionError as exc:
            raise StepFailed(f"backup failed, so nothing was changed: {exc}") from None
        if not info.verified:
            raise StepFailed(f"backup {info.id} did not verify, so nothing was changed")
        note["detail"] = f"`{info.id}`, {size(info.size_bytes)}, verified"
    return info.id


async def _status(env: Environment, rec: Recorder, names: list[str] | None) -> None:
    async with rec.step("status", "Migration status", 2) as note:
        fault_point("deploy.status")
        status = await migration_status(env.migration_url, env.migrations_dir)
        refuse_unsafe_state(status, env.name)
        if names is not None and status.pending != names:
            note["detail"] = f"pending now: {', '.join(status.pending) or 'none'}; approved: {', '.join(names)}"
            raise StepFailed("the pending migrations changed since approval, so nothing was applied; "
                             f"request a new run ({note['detail']})")
        note["detail"] = f"{len(status.pending)} pending; current version: {status.last_applied or 'none'}"


async def _apply(env: Environment, rec: Recorder, names: list[str] | None, checksums: dict[str, str] | None,
                 should_continue: Callable[[], bool], on_event: EventCallback | None) -> DeployResult:
    applied: list[str] = []
    seen: list[str] = []

    async def recorded(event: DeployEvent) -> None:
        migration = event.migration or ""
        name = f"migration:{migration}" if migration else None
        if event.kind == "started" and name and event.attempt == 1:
            seen.append(migration)
            rec.start(name, f"Apply `{migration}`", 2 + (names.index(migration) + 1 if names else len(seen)))
        elif event.kind == "waiting" and name:
            who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
            rec.note(name, f"waiting for {who} to release a conflicting lock (no attempt queued)")
        elif event.kind == "retrying" and name:
            who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
            rec.note(name, f"lock timeout, retry {event.attempt} (blocked by {who})")
        elif event.kind == "finished" and name:
            applied.append(migration)
            tries = f" after {event.attempt} attempts" if event.attempt > 1 else ""
            held_by = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
            waited = f" after waiting {event.waited:.1f}s for {held_by}" if event.waited else ""
            rec.finish(name, "done", f"applied{tries}{waited}")
        elif event.kind == "failed" and name:
            rec.finish(name, "failed", "failed: see its logs")
        elif event.kind == "waiting_for_lock":
            who = ", ".join(b.describe() for b in event.blockers) or "another session"
            rec.note("status", f"waiting for the migration lock held by {who}")
        await emit_safely(on_event, event)

    try:
        result = await deploy(env.migration_url, env.migrations_dir, lock_timeout=env.lock_timeout,
                              statement_timeout=env.statement_timeout, retry=env.retry,
                              advisory_lock_timeout=env.advisory_lock_timeout, on_event=recorded,
                              should_continue=should_continue, expected=names, expected_checksums=checksums,
                              connect_timeout=env.connect_timeout, env_name=env.name)
    except ActionError as exc:
        raise StepFailed(str(exc), result={"applied": applied}) from None
    if result.failed is not None:
        f = result.failed
        where = f" (statement reached: {f.statement})" if f.statement else ""
        raise StepFailed(f"migration `{f.name}` failed{where}",
                         result={"applied": [a.name for a in result.applied], "failed_migration": f.name,
                                 "logs": f.logs}, deploy=result)
    return result


async def _verify(env: Environment, rec: Recorder, position: int, *, applied: list[str] | None = None) -> str:
    """The runbook's verification: status clean, connectivity, fresh statistics for the tables the migrations
    rewrote or filled (``ANALYZE``), the environment's ``verify_queries``, the health URL."""
    async with rec.step("verify", "Verification", position) as note:
        fault_point("deploy.verify")
        status = await migration_status(env.migration_url, env.migrations_dir)
        parts = ["status clean" if status.up_to_date else "status NOT clean"]
        parts.append(f"connectivity ok ({duration(await ping(env.database_url, timeout=env.connect_timeout))})")
        local = status.local_by_name()
        tables = tables_to_analyze(local[n].sql for n in applied or [] if n in local)
        try:
            analyzed = await analyze_tables(env.migration_url, tables, timeout=env.connect_timeout,
                                            statement_timeout=env.statement_timeout)
            if analyzed:
                parts.append(f"ANALYZE {', '.join(analyzed)}")
        except (ActionError, OSError, TimeoutError, asyncpg.PostgresError) as exc:  # statistics are no reason to fail
            parts.append(f"ANALYZE not done ({' '.join(str(exc).split())[:160]}): run it by hand")
        answers = await run_verify_queries(env.migration_url, env.verify_queries, timeout=env.connect_timeout,
                                           statement_timeout=env.statement_timeout)
        parts += compared_with_rehearsal(answers, latest_rehearsal(env.backup_dir, env.name), applied or [],
                                         {n: m.checksum for n, m in local.items()})
        failed_queries = [a for a in answers if a.error]
        if failed_queries:
            note["detail"] = "; ".join(parts)
            raise StepFailed("verification failed: " + failed_queries[0].describe())
        if env.health_url:
            check = await check_health_url(env.health_url)
            parts.append(f"health URL {check.reason}")
            if check.status == "fail":
                note["detail"] = "; ".join(parts)
                raise StepFailed("verification failed: health URL " + check.reason)
        note["detail"] = "; ".join(parts)
        if not status.up_to_date:
            raise StepFailed("verification failed: migration status is not clean after applying")
    return note["detail"]
