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
from bot.config import Environment
from bot.render import blocks as bk
from bot.render import messages
from bot.run_steps import StepFailed, backup_first, conclude, step
from bot.workflow import Workflow
from state import runs, steps

log = logging.getLogger(__name__)


class _Abort(Exception):
    """Stop here: someone pressed Abort (checked between steps and between migrations)."""


def _aborted(wf: Workflow, run_id: int) -> bool:
    run = runs.get(wf.store, run_id)
    return bool(run and run.get("abort_requested"))


def _plan_steps(wf: Workflow, run_id: int, names: list[str]) -> None:
    labels = [("preflight", "Pre-flight checks"), ("backup", "Backup (pg_dump)"), ("status", "Migration status"),
              *((f"migration:{n}", f"Apply `{n}`") for n in names), ("verify", "Verification")]
    for position, (name, label) in enumerate(labels):
        steps.plan(wf.store, run_id, name, label, position=position)
    wf.refresh(run_id)


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    names = [m["name"] for m in run["plan"]["migrations"]]
    _plan_steps(wf, run_id, names)
    started = time.monotonic()
    result: dict[str, Any] = {"applied": []}
    try:
        await _preflight(wf, run_id, env)
        if _aborted(wf, run_id):
            raise _Abort()
        result["backup_id"] = await backup_first(wf, run_id, env, user, 1, f"before migrate run {run_id}")
        if _aborted(wf, run_id):
            raise _Abort()
        await _status(wf, run_id, env, names)
        result["applied"] = await _apply(wf, run_id, env, names)
        if _aborted(wf, run_id) and len(result["applied"]) < len(names):
            raise _Abort()
        result["verification"] = await _verify(wf, run_id, env, len(names) + 3)
        result["duration"] = time.monotonic() - started
        result["summary"] = (f"{len(result['applied'])} migration(s) applied in {bk.duration(result['duration'])}; "
                             f"backup `{result['backup_id']}`; verification: {result['verification']}")
        conclude(wf, run_id, user, status="succeeded", result=result)
    except _Abort:
        result["duration"] = time.monotonic() - started
        done = ", ".join(result["applied"]) or "none"
        conclude(wf, run_id, user, status="aborted", result=result,
                 error=f"aborted on request; migrations applied before the abort: {done}")
    except StepFailed as exc:
        result.update(exc.result)
        result["duration"] = time.monotonic() - started
        conclude(wf, run_id, user, status="failed", result=result, error=str(exc))
        await _post_incident(wf, run_id, result, str(exc))
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("run %s crashed", run_id)
        conclude(wf, run_id, user, status="failed", result=result,
                 error=f"internal error: {exc}; the database state is preserved in the backup")
        await _post_incident(wf, run_id, result, f"internal error: {exc}")


async def _preflight(wf: Workflow, run_id: int, env: Environment) -> None:
    """The runbook's pre-flight: the database answers; plus the backup pre-flight."""
    from actions.backup import preflight
    from actions.db import ping

    async with step(wf, run_id, "preflight", "Pre-flight checks", 0) as note:
        await ping(env.database_url, timeout=env.connect_timeout)
        checks = await preflight(env.migration_url, env.backup_dir, env.name, free_margin=env.backup_free_margin)
        failed = [c for c in checks if not c.ok]
        if failed:
            note["detail"] = "; ".join(c.message for c in failed)
            raise StepFailed(f"pre-flight failed: {note['detail']}")
        note["detail"] = "database reachable, backup pre-flight passed"


async def _status(wf: Workflow, run_id: int, env: Environment, names: list[str]) -> None:
    from actions.deploy import refuse_unsafe_state
    from actions.status import migration_status

    async with step(wf, run_id, "status", "Migration status", 2) as note:
        status = await migration_status(env.migration_url, env.migrations_dir)
        refuse_unsafe_state(status)
        if status.pending != names:
            note["detail"] = f"pending now: {', '.join(status.pending) or 'none'}; approved: {', '.join(names)}"
            raise StepFailed("the pending migrations changed since approval, so nothing was applied; "
                             f"request a new run ({note['detail']})")
        note["detail"] = f"{len(status.pending)} pending; current version: {status.last_applied or 'none'}"


async def _apply(wf: Workflow, run_id: int, env: Environment, names: list[str]) -> list[str]:
    from actions.deploy import deploy

    run = runs.get(wf.store, run_id) or {}
    checksums = {m["name"]: m["checksum"] for m in run["plan"]["migrations"]}
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
            if fresh:  # the thread hears about each blocker once, not on every retry
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
                              expected_checksums=checksums, connect_timeout=env.connect_timeout)
    except ActionError as exc:
        raise StepFailed(str(exc), result={"applied": applied}) from None
    if result.failed is not None:
        f = result.failed
        where = f" (statement reached: {f.statement})" if f.statement else ""
        raise StepFailed(f"migration `{f.name}` failed{where}",
                         result={"applied": [a.name for a in result.applied], "failed_migration": f.name,
                                 "logs": f.logs})
    return [a.name for a in result.applied]


async def _verify(wf: Workflow, run_id: int, env: Environment, position: int) -> str:
    """The runbook's verification: status clean, health checks, connectivity."""
    from actions.db import ping
    from actions.status import migration_status

    async with step(wf, run_id, "verify", "Verification", position) as note:
        status = await migration_status(env.migration_url, env.migrations_dir)
        parts = ["status clean" if status.up_to_date else "status NOT clean"]
        parts.append(f"connectivity ok ({bk.duration(await ping(env.database_url, timeout=env.connect_timeout))})")
        if env.health_url:
            from actions.health import check_health_url

            check = await check_health_url(env.health_url)
            parts.append(f"health URL {check.reason}")
            if check.status == "fail":
                note["detail"] = "; ".join(parts)
                raise StepFailed("verification failed: health URL " + check.reason)
        note["detail"] = "; ".join(parts)
        if not status.up_to_date:
            raise StepFailed("verification failed: migration status is not clean after applying")
    return note["detail"]


async def _post_incident(wf: Workflow, run_id: int, result: dict[str, Any], reason: str) -> None:
    run = runs.get(wf.store, run_id)
    if run is None:
        return
    text, blocks = messages.incident(run["env"], run_id, result.get("failed_migration"),
                                     result.get("logs") or reason, result.get("backup_id") or run.get("backup_id"),
                                     result.get("applied", []))
    await wf.reply(run, text, blocks, broadcast=True)
