"""After a restart: reload open runs, and explain the ones that were executing.

A run that was executing when the bot stopped is never re-run blindly. The bot reads what
the database says (``_prisma_migrations`` rows, the advisory lock) and updates the run
message with what actually happened; people decide what comes next.
"""

from __future__ import annotations

import logging
from typing import Any

from actions.errors import ActionError
from bot.workflow import Workflow
from state import locks, runs, steps

log = logging.getLogger(__name__)


async def recover(wf: Workflow) -> list[int]:
    """Re-render open runs; examine and close the ones that were executing. Returns their ids."""
    examined = []
    for run in runs.open_runs(wf.store):
        if run["status"] == "running" and run["id"] not in wf.executing:
            try:
                await examine_interrupted(wf, run)
            except Exception:
                log.exception("cannot examine interrupted run %s", run["id"])
            examined.append(run["id"])
        wf.refresh(run["id"])
    return examined


async def examine_interrupted(wf: Workflow, run: dict[str, Any]) -> None:
    from actions.status import migration_status

    env = wf.env(run["env"])
    run_id = run["id"]
    names = [m["name"] for m in (run.get("plan") or {}).get("migrations", [])]
    facts: list[str] = []
    applied: list[str] = []
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
        failed = {f.name: f for f in status.failed}
        for name in names:
            step = f"migration:{name}"
            if name in status.applied_checksums:
                applied.append(name)
                _settle_step(wf, run_id, step, "done", "applied (found in _prisma_migrations after the restart)")
            elif name in failed:
                _settle_step(wf, run_id, step, "failed", f"failed: {(failed[name].logs or '')[:300]}")
            else:
                _settle_step(wf, run_id, step, "skipped", "not started")
        facts.append(f"applied: {', '.join(applied) or 'none'}")
        if failed:
            facts.append(f"failed: {', '.join(failed)} (resolve with `/migrate resolve {env.name} NAME rolled-back`)")
        not_started = [n for n in names if n not in applied and n not in failed]
        if not_started:
            facts.append(f"not started: {', '.join(not_started)}")
        holder = await _advisory_lock_holder(env.migration_url)
        if holder:
            facts.append(f"the migration lock is still held by {holder}: something is still running")
    except ActionError as exc:
        facts.append(f"the database could not be examined: {exc}")
    for s in steps.steps(wf.store, run_id):
        if s["status"] in ("running", "pending"):
            steps.finish(wf.store, run_id, s["name"], "unknown" if s["status"] == "running" else "skipped")
    backup = f" Backup `{run['backup_id']}` was taken before." if run.get("backup_id") else ""
    error = ("the bot restarted while this run was executing; nothing was re-run. What the database shows: "
             + "; ".join(facts) + "." + backup + " Start a new `/migrate` to continue.")
    runs.transition(wf.store, run_id, ["running"], "interrupted", error=error,
                    result={"applied": applied, "backup_id": run.get("backup_id")})
    locks.release(wf.store, env.name, run_id)
    wf.audit("bot", "interrupted", run=run, detail=error)
    await wf.reply(run, f":warning: Run #{run_id} was interrupted by a restart. {error}", broadcast=False)


def _settle_step(wf: Workflow, run_id: int, name: str, status: str, detail: str) -> None:
    existing = {s["name"]: s for s in steps.steps(wf.store, run_id)}
    if name in existing and existing[name]["status"] in ("pending", "running"):
        steps.finish(wf.store, run_id, name, status, detail=detail)


async def _advisory_lock_holder(url: str) -> str | None:
    from actions.advisory_lock import lock_holders
    from actions.db import connection

    async with connection(url) as conn:
        holders = await lock_holders(conn)
    return ", ".join(h.describe() for h in holders) or None
