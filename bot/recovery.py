"""After a restart: reload open runs, and explain the ones that were executing.

A run that was executing when the bot stopped is never re-run blindly. The bot reads what
the servers say (``_prisma_migrations`` rows and the advisory lock for a migration or an
undo; which databases exist for a restore) and updates the run message with what actually
happened; people decide what comes next. Environment locks whose run is no longer open
(the bot died between ending a run and releasing its lock) are released.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from actions.errors import ActionError
from bot.config import Environment
from bot.workflow import Workflow
from state import dedup, locks, runs, steps

log = logging.getLogger(__name__)


async def recover(wf: Workflow) -> list[int]:
    """Re-render open runs; examine and close the ones that were executing. Returns their ids."""
    _release_stale_locks(wf)
    # retries and double submits come within seconds; a week of keys is plenty
    dedup.forget_older_than(wf.store, (datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="milliseconds"))
    examined = []
    for run in runs.open_runs(wf.store):
        if run["status"] == "running" and run["id"] not in wf.executing:
            try:
                await examine_interrupted(wf, run)
            except Exception:
                log.exception("cannot examine interrupted run %s", run["id"])
                _close(wf, run, "the bot restarted while this run was executing and could not examine it "
                                "(see its log); nothing was re-run: check the database before acting")
            examined.append(run["id"])
        wf.refresh(run["id"])
    return examined


def _release_stale_locks(wf: Workflow) -> None:
    for row in locks.all_locks(wf.store):
        run = runs.get(wf.store, row["run_id"])
        if run is None or run["status"] not in runs.OPEN:
            locks.release(wf.store, row["env"], row["run_id"])
            wf.audit("bot", "release_stale_lock", env=row["env"],
                     detail=f"run {row['run_id']} had ended ({(run or {}).get('status', 'missing')})")


async def examine_interrupted(wf: Workflow, run: dict[str, Any]) -> None:
    env = wf.env(run["env"])
    kind = run["kind"]
    if kind in ("migrate", "undo"):
        facts = await _migration_facts(wf, run, env)
        advice = ("Start a new `/migrate` to continue." if kind == "migrate"
                  else f"Check `/migrate status {env.name}` before asking again.")
    elif kind == "rollback":
        facts = await _restore_facts(env)
        advice = (f"Check the database before acting; `/rollback {env.name}` starts over, and the safety "
                  "snapshot (if it was taken) is among the backups.")
    else:
        facts = ["its result is unknown"]
        advice = "Check by hand before asking again."
    backup = f" Backup `{run['backup_id']}` was taken before." if run.get("backup_id") else ""
    _close(wf, run, "the bot restarted while this run was executing; nothing was re-run. What the database "
                    "server shows: " + "; ".join(facts) + "." + backup + " " + advice)


def _close(wf: Workflow, run: dict[str, Any], error: str) -> None:
    for s in steps.steps(wf.store, run["id"]):
        if s["status"] in ("running", "pending"):
            steps.finish(wf.store, run["id"], s["name"], "unknown" if s["status"] == "running" else "skipped")
    applied = (run.get("result") or {}).get("applied", [])
    runs.transition(wf.store, run["id"], ["running"], "interrupted", error=error,
                    result={**(run.get("result") or {}), "applied": applied, "backup_id": run.get("backup_id")})
    locks.release(wf.store, run["env"], run["id"])
    wf.audit("bot", "interrupted", run=run, detail=error)
    wf.spawn(wf.reply(run, f":warning: Run #{run['id']} was interrupted by a restart: {error}"), "interrupted")


async def _migration_facts(wf: Workflow, run: dict[str, Any], env: Environment) -> list[str]:
    """Which of the run's migrations ``_prisma_migrations`` records, and who holds the advisory lock."""
    from actions.status import migration_status

    plan = run.get("plan") or {}
    names = [m["name"] for m in plan.get("migrations", [])] or [plan.get("migration", "")]
    facts: list[str] = []
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
    except ActionError as exc:
        return [f"the database could not be examined: {exc}"]
    failed = {f.name: f for f in status.failed}
    if run["kind"] == "undo":
        name = names[0]
        undone = name in status.pending
        facts.append(f"{name} is " + ("pending again: the undo went through" if undone
                                      else "still applied: the undo did not happen"))
    else:
        applied = []
        for name in names:
            step = f"migration:{name}"
            if name in status.applied_checksums:
                applied.append(name)
                _settle_step(wf, run["id"], step, "done", "applied (found in _prisma_migrations after the restart)")
            elif name in failed:
                _settle_step(wf, run["id"], step, "failed", f"failed: {(failed[name].logs or '')[:300]}")
            else:
                _settle_step(wf, run["id"], step, "skipped", "not started")
        run["result"] = {**(run.get("result") or {}), "applied": applied}
        facts.append(f"applied: {', '.join(applied) or 'none'}")
        for name in failed:
            transactional = next((m.get("transactional", True) for m in plan.get("migrations", [])
                                  if m["name"] == name), True)
            how = ("its changes were rolled back: fix it, then `/migrate resolve {env} {name} rolled-back`"
                   if transactional else
                   "it runs outside a transaction, so part of it may be applied: finish or undo that part by "
                   "hand, then `/migrate resolve {env} {name} applied` or `rolled-back`")
            facts.append(f"failed: {name} ({how.format(env=env.name, name=name)})")
        not_started = [n for n in names if n not in applied and n not in failed]
        if not_started:
            facts.append(f"not started: {', '.join(not_started)}")
    holder = await _advisory_lock_holder(env.migration_url)
    if holder:
        facts.append(f"the migration lock is still held by {holder}: something is still running")
    return facts


async def _restore_facts(env: Environment) -> list[str]:
    """Whether the database exists, and which copies a restore kept or left half-way."""
    from actions.restore import server_databases

    try:
        dbs = await server_databases(env.migration_url)
    except ActionError as exc:
        return [f"the server could not be examined: {exc}"]
    facts = [f"database {dbs.database} {'exists' if dbs.exists else 'DOES NOT EXIST'}"]
    if dbs.previous:
        facts.append(f"databases kept by restores (newest first): {', '.join(dbs.previous)}")
    if dbs.half_restored:
        facts.append(f"copies a restore was filling (not in use; safe to drop once checked): "
                     f"{', '.join(dbs.half_restored)}")
    if not dbs.exists and dbs.previous:
        facts.append(f"if the swap stopped half-way, {dbs.previous[0]} holds the data from before the restore")
    return facts


def _settle_step(wf: Workflow, run_id: int, name: str, status: str, detail: str) -> None:
    existing = {s["name"]: s for s in steps.steps(wf.store, run_id)}
    if name in existing and existing[name]["status"] in ("pending", "running"):
        steps.finish(wf.store, run_id, name, status, detail=detail)


async def _advisory_lock_holder(url: str) -> str | None:
    from actions.advisory_lock import lock_holders
    from actions.db import connection

    try:
        async with connection(url) as conn:
            holders = await lock_holders(conn)
    except ActionError:
        return None
    return ", ".join(h.describe() for h in holders) or None
