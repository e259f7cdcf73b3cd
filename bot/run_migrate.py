"""The executor of a `/migrate` run: the runbook's migration script, step by step.

pre-flight → backup (``pg_dump``, verified) → status → each migration → verification.
Every step is written to state before and after it happens, so a restart in the middle
leaves a run that :mod:`bot.recovery` can explain. No migration is applied unless the
backup of this run verified.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actions.errors import ActionError
from bot.render import blocks as bk
from bot.render import messages
from bot.workflow import Workflow
from state import locks, runs, steps

log = logging.getLogger(__name__)


class StepFailed(Exception):
    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


def _aborted(wf: Workflow, run_id: int) -> bool:
    run = runs.get(wf.store, run_id)
    return bool(run and run.get("abort_requested"))


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    names = [m["name"] for m in run["plan"]["migrations"]]
    position = 0
    for name, label in [("preflight", "Pre-flight checks"), ("backup", "Backup (pg_dump)"),
                        ("status", "Migration status")]:
        steps.plan(wf.store, run_id, name, label, position=position)
        position += 1
    for n in names:
        steps.plan(wf.store, run_id, f"migration:{n}", f"Apply `{n}`", position=position)
        position += 1
    steps.plan(wf.store, run_id, "verify", "Verification", position=position)
    wf.refresh(run_id)
    started = time.monotonic()
    result: dict[str, Any] = {}
    try:
        await _preflight(wf, run_id, env)
        if _aborted(wf, run_id):
            raise _Abort()
        backup_id = await _backup(wf, run_id, env, user)
        result["backup_id"] = backup_id
        if _aborted(wf, run_id):
            raise _Abort()
        await _status(wf, run_id, env, names)
        applied = await _apply(wf, run_id, env, names)
        result["applied"] = applied
        if _aborted(wf, run_id) and len(applied) < len(names):
            raise _Abort()
        verification = await _verify(wf, run_id, env)
        result["verification"] = verification
        result["duration"] = time.monotonic() - started
        result["summary"] = (f"{len(applied)} migration(s) applied in {bk.duration(result['duration'])}; "
                             f"backup `{backup_id}`; verification: {verification}")
        runs.transition(wf.store, run_id, ["running"], "succeeded", result=result, current_step="done")
        wf.audit(user, "succeeded", run=run, detail=result["summary"])
    except _Abort:
        _skip_rest(wf, run_id, "aborted")
        result["duration"] = time.monotonic() - started
        done = ", ".join(result.get("applied", [])) or "none"
        runs.transition(wf.store, run_id, ["running"], "aborted", result=result, current_step="aborted",
                        error=f"aborted on request; migrations applied before the abort: {done}")
        wf.audit(user, "aborted", run=run, detail=f"applied: {done}")
    except StepFailed as exc:
        result.update(exc.result)
        result["duration"] = time.monotonic() - started
        _skip_rest(wf, run_id, "skipped")
        runs.transition(wf.store, run_id, ["running"], "failed", result=result, error=str(exc),
                        current_step="failed")
        wf.audit(user, "failed", run=run, detail=str(exc))
        await _post_incident(wf, run_id, result, str(exc))
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("run %s crashed", run_id)
        _skip_rest(wf, run_id, "skipped")
        runs.transition(wf.store, run_id, ["running"], "failed", result=result,
                        error=f"internal error: {exc}; the database state is preserved in the backup",
                        current_step="failed")
        await _post_incident(wf, run_id, result, f"internal error: {exc}")
    finally:
        locks.release(wf.store, env.name, run_id)
        wf.executing.pop(run_id, None)
        wf.refresh(run_id)


class _Abort(Exception):
    pass


def _skip_rest(wf: Workflow, run_id: int, status: str) -> None:
    for s in steps.steps(wf.store, run_id):
        if s["status"] in ("pending", "running"):
            steps.finish(wf.store, run_id, s["name"], status)


def _begin(wf: Workflow, run_id: int, name: str, label: str, position: int) -> None:
    steps.start(wf.store, run_id, name, label, position=position)
    runs.update(wf.store, run_id, current_step=name)
    wf.refresh(run_id)


async def _preflight(wf: Workflow, run_id: int, env: Any) -> None:
    """The runbook's pre-flight: DATABASE_URL set, database reachable; plus the backup pre-flight."""
    from actions.backup import preflight
    from actions.db import connection

    _begin(wf, run_id, "preflight", "Pre-flight checks", 0)
    try:
        async with connection(env.database_url, timeout=env.connect_timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=env.connect_timeout)
        checks = await preflight(env.migration_url, env.backup_dir, env.name, free_margin=env.backup_free_margin)
    except ActionError as exc:
        steps.finish(wf.store, run_id, "preflight", "failed", detail=str(exc))
        raise StepFailed(f"pre-flight failed: {exc}") from None
    failed = [c for c in checks if not c.ok]
    if failed:
        reason = "; ".join(c.message for c in failed)
        steps.finish(wf.store, run_id, "preflight", "failed", detail=reason)
        raise StepFailed(f"pre-flight failed: {reason}")
    steps.finish(wf.store, run_id, "preflight", "done", detail="database reachable, backup pre-flight passed")


async def _backup(wf: Workflow, run_id: int, env: Any, user: str) -> str:
    from actions.backup import take_backup

    _begin(wf, run_id, "backup", "Backup (pg_dump)", 1)

    def progress(p: Any) -> None:
        steps.note(wf.store, run_id, "backup", f"{bk.size(p.bytes_written)} written, {bk.duration(p.elapsed)}")
        wf.refresh(run_id)

    try:
        info = await take_backup(env.migration_url, env.backup_dir, env.name, reason=f"before migrate run {run_id}",
                                 requested_by=user, jobs=env.backup_jobs, free_margin=env.backup_free_margin,
                                 on_progress=progress)
    except ActionError as exc:
        steps.finish(wf.store, run_id, "backup", "failed", detail=str(exc))
        raise StepFailed(f"backup failed, so nothing was applied: {exc}") from None
    if not info.verified:
        steps.finish(wf.store, run_id, "backup", "failed", detail=f"{info.id} did not verify")
        raise StepFailed(f"backup {info.id} did not verify, so nothing was applied")
    runs.update(wf.store, run_id, backup_id=info.id)
    steps.finish(wf.store, run_id, "backup", "done", detail=f"`{info.id}`, {bk.size(info.size_bytes)}, verified")
    return info.id


async def _status(wf: Workflow, run_id: int, env: Any, names: list[str]) -> None:
    from actions.deploy import refuse_unsafe_state
    from actions.status import migration_status

    _begin(wf, run_id, "status", "Migration status", 2)
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
        refuse_unsafe_state(status)
    except ActionError as exc:
        steps.finish(wf.store, run_id, "status", "failed", detail=str(exc))
        raise StepFailed(str(exc)) from None
    if status.pending != names:
        detail = (f"pending now: {', '.join(status.pending) or 'none'}; approved: {', '.join(names)}")
        steps.finish(wf.store, run_id, "status", "failed", detail=detail)
        raise StepFailed("the pending migrations changed since approval, so nothing was applied; "
                         f"request a new run ({detail})")
    steps.finish(wf.store, run_id, "status", "done",
                 detail=f"{len(status.pending)} pending; current version: {status.last_applied or 'none'}")


async def _apply(wf: Workflow, run_id: int, env: Any, names: list[str]) -> list[str]:
    from actions.deploy import deploy

    run = runs.get(wf.store, run_id) or {}
    applied: list[str] = []
    reported_blockers: set[int] = set()

    async def on_event(event: Any) -> None:
        name = f"migration:{event.migration}" if event.migration else None
        if event.kind == "started" and name and event.attempt == 1:
            steps.start(wf.store, run_id, name, f"Apply `{event.migration}`", position=3 + names.index(event.migration))
            runs.update(wf.store, run_id, current_step=name)
        elif event.kind == "retrying" and name:
            who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
            steps.note(wf.store, run_id, name, f"lock timeout, retry {event.attempt} (blocked by {who})")
            fresh = [b for b in event.blockers if b.pid not in reported_blockers]
            if fresh:
                reported_blockers.update(b.pid for b in fresh)
                lines = [f":repeat: `{event.migration}` waits for a lock; retrying with backoff. Blocked by:"]
                lines += [f"• {b.describe()}" for b in fresh]
                lines.append(f"See `/db blockers {env.name}`.")
                await wf.reply(run, lines[0], [bk.section("\n".join(lines))])
        elif event.kind == "finished" and name:
            applied.append(event.migration)
            tries = f" after {event.attempt} attempts" if event.attempt > 1 else ""
            steps.finish(wf.store, run_id, name, "done", detail=f"applied{tries}")
        elif event.kind == "failed" and name:
            steps.finish(wf.store, run_id, name, "failed", detail="failed: logs in the thread")
        elif event.kind == "waiting_for_lock":
            who = ", ".join(b.describe() for b in event.blockers) or "another session"
            steps.note(wf.store, run_id, "status", f"waiting for the migration lock held by {who}")
        wf.refresh(run_id)

    try:
        result = await deploy(env.migration_url, env.migrations_dir, lock_timeout=env.lock_timeout,
                              statement_timeout=env.statement_timeout, retry=env.retry,
                              advisory_lock_timeout=env.advisory_lock_timeout, on_event=on_event,
                              should_continue=lambda: not _aborted(wf, run_id), expected=names,
                              connect_timeout=env.connect_timeout)
    except ActionError as exc:
        raise StepFailed(str(exc), result={"applied": applied}) from None
    if result.failed is not None:
        f = result.failed
        where = f" (statement reached: {f.statement})" if f.statement else ""
        raise StepFailed(f"migration `{f.name}` failed{where}",
                         result={"applied": [a.name for a in result.applied], "failed_migration": f.name,
                                 "logs": f.logs})
    return [a.name for a in result.applied]


async def _verify(wf: Workflow, run_id: int, env: Any) -> str:
    """The runbook's verification: status clean, health checks, connectivity."""
    from actions.db import connection
    from actions.status import migration_status

    _begin(wf, run_id, "verify", "Verification", 10_000)
    parts = []
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
        parts.append("status clean" if status.up_to_date else "status NOT clean")
        t0 = time.monotonic()
        async with connection(env.database_url, timeout=env.connect_timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=env.connect_timeout)
        parts.append(f"connectivity ok ({bk.duration(time.monotonic() - t0)})")
    except ActionError as exc:
        steps.finish(wf.store, run_id, "verify", "failed", detail=str(exc))
        raise StepFailed(f"verification failed: {exc}") from None
    if env.health_url:
        from actions.health import check_health_url

        check = await check_health_url(env.health_url)
        parts.append(f"health URL {check.reason}")
        if check.status == "fail":
            steps.finish(wf.store, run_id, "verify", "failed", detail="; ".join(parts))
            raise StepFailed("verification failed: health URL " + check.reason)
    if not status.up_to_date:
        steps.finish(wf.store, run_id, "verify", "failed", detail="; ".join(parts))
        raise StepFailed("verification failed: migration status is not clean after applying")
    detail = "; ".join(parts)
    steps.finish(wf.store, run_id, "verify", "done", detail=detail)
    return detail


async def _post_incident(wf: Workflow, run_id: int, result: dict[str, Any], reason: str) -> None:
    run = runs.get(wf.store, run_id)
    if run is None:
        return
    text, blocks = messages.incident(run["env"], run_id, result.get("failed_migration"),
                                     result.get("logs") or reason, result.get("backup_id") or run.get("backup_id"),
                                     result.get("applied", []))
    await wf.reply(run, text, blocks, broadcast=True)
