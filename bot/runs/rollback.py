"""`/rollback ENV`: restore a chosen backup, from request to result.

The request lists the verified backups in a menu (:func:`request_restore`); choosing one shows
what restoring it undoes (:func:`choose_backup`); the run takes the same approvals as a
migration and always the typed RESTORE (:mod:`bot.rules.confirmation`). The executor
(:func:`execute`) restores into a new database, verifies it and swaps it in: safety snapshot,
restore, verify, swap, verify. The environment's lock is shared with `/migrate`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from actions.backup import BackupInfo, list_backups, origin_problem
from actions.db import database_name
from actions.errors import ActionError
from actions.restore import CONFIRM_WORD, RestoreStep, clean_up, restore, server_databases
from actions.status import migration_status
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.rules.run_view import chosen_backup
from bot.runs.controls import operable
from bot.runs.open import end_unstarted, new_input_version, open_run, post_or_cancel, preparing
from bot.runs.steps import conclude
from bot.workflow import Workflow
from state import approvals, runs, steps
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)
MAX_BACKUP_OPTIONS = 100  # a static select holds 100 options


# --- restore a backup ---------------------------------------------------------------------------


def backup_choice(info: BackupInfo, env: Environment) -> dict[str, Any]:
    """A backup as the menu offers it; ``origin`` says when it came from another place (shown, confirmed)."""
    return {"id": info.id, "created_at": info.created_at.isoformat(), "size_bytes": info.size_bytes,
            "last_migration": info.last_migration, "kind": info.kind,
            "applied_migrations": list(info.applied_migrations),
            "origin": origin_problem(info, env.name, env.migration_url)}


async def request_restore(wf: Workflow, env: Environment, actor: Actor, *, preselect: str | None = None) -> int | None:
    """`/rollback ENV`: list the verified backups in a select menu, newest first."""
    run_id = await open_run(wf, env, actor, "rollback")
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            backups = [b for b in list_backups(env.backup_dir, env.name) if b.verified]
        except (ActionError, OSError) as exc:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error=str(exc))
            await refuse(wf, actor, f"cannot list the backups of {env.name}: {exc}", env=env.name)
            return None
        if not backups:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error="no backups")
            await tell(wf, actor, messages.no_backups(env.name))
            return None
        choices = [backup_choice(b, env) for b in backups[:MAX_BACKUP_OPTIONS]]
        more = max(0, len(backups) - MAX_BACKUP_OPTIONS)
        runs.update(wf.store, run_id, plan={"backups": choices, "target": None, "more": more})
        if not await post_or_cancel(wf, run_id, env, actor, f"{len(backups)} verified backups"):
            return None
        if preselect and any(c["id"] == preselect for c in choices):
            await choose_backup(wf, run_id, actor, preselect)
        return run_id
    return None


async def choose_backup(wf: Workflow, run_id: int, actor: Actor, backup_id: str) -> None:
    """A backup was picked: show what restoring it will undo; earlier approvals no longer hold."""
    view = await operable(wf, run_id, actor)
    if view is None or view.run["kind"] != "rollback" or view.status is not RunStatus.AWAITING:
        if view is not None:
            new_input_version(wf, run_id)  # the menu goes back to the bot's choice
            await refuse(wf, actor, "this rollback is no longer open", run=view.run)
        wf.refresh(run_id)
        return
    run, env = view.run, view.env
    plan = run["plan"]
    choice = next((c for c in plan["backups"] if c["id"] == backup_id), None)
    if choice is None:
        new_input_version(wf, run_id)
        wf.refresh(run_id)
        await refuse(wf, actor, f"backup {backup_id} is not one of this run's choices", run=run)
        return
    if plan.get("target") == backup_id:
        return
    plan["target"] = backup_id
    plan["impact"] = await restore_impact(env, choice)
    runs.update(wf.store, run_id, plan=plan)
    if approvals.withdraw_all(wf.store, run_id):
        wf.audit("bot", "approvals_reset", run=run, detail="the chosen backup changed")
    wf.audit(actor.user, "choose_backup", run=run, detail=backup_id)
    wf.refresh(run_id)


async def restore_impact(env: Environment, choice: dict[str, Any]) -> dict[str, Any]:
    """What a restore of ``choice`` undoes: time since the backup, migrations applied since."""
    age = (datetime.now(UTC) - datetime.fromisoformat(choice["created_at"])).total_seconds()
    impact: dict[str, Any] = {"age_seconds": age}
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
        kept = set(choice.get("applied_migrations") or [])
        impact["undone_migrations"] = [n for n in status.applied if n not in kept]
    except ActionError as exc:
        impact["error"] = f"cannot read the current migrations: {exc}"
    return impact


async def from_incident(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The incident's "Roll back to backup": a rollback run with this run's backup chosen."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] != RunStatus.FAILED:
        await refuse(wf, actor, "only a failed run offers a rollback", run=run)
        return
    env = wf.env(run["env"])
    if not run.get("backup_id"):
        await refuse(wf, actor, f"run #{run_id} took no backup; choose one with `/rollback {env.name}`", run=run)
        return
    runs.update(wf.store, run_id, decision=f"roll back to backup {run['backup_id']}, decided by <@{actor.user}>")
    wf.audit(actor.user, "decide_rollback", run=run)
    wf.refresh(run_id)
    await request_restore(wf, env, actor, preselect=run["backup_id"])


# --- the executor ------------------------------------------------------------------------------

LABELS = {"verify backup": "Verify the chosen backup", "safety snapshot": "Safety snapshot of the current data",
          "restore": "Restore into a new database", "verify restored database": "Verify the restored database",
          "swap": "Swap databases", "verify connectivity": "Verify connectivity",
          "empty database": "Empty the database (in place)", "restore safety snapshot": "Put the snapshot back"}
BEFORE_SWAP = {"verify backup", "safety snapshot", "restore", "verify restored database"}


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    target = run["plan"]["target"]
    choice = chosen_backup(run["plan"])
    order: list[str] = []
    failed_step: list[str] = []

    async def on_step(s: RestoreStep) -> None:
        if s.name not in order:
            order.append(s.name)
        position = order.index(s.name)
        label = LABELS.get(s.name, s.name)
        if s.status == "started":
            steps.start(wf.store, run_id, s.name, label, position=position)
            runs.update(wf.store, run_id, current_step=s.name)
        else:
            if s.status == "skipped":
                steps.plan(wf.store, run_id, s.name, label, position=position)
            if s.status == "failed":
                failed_step.append(s.name)
            steps.finish(wf.store, run_id, s.name, s.status, detail=s.detail)
        wf.refresh(run_id)

    try:
        result = await restore(env.migration_url, env.backup_dir, env.name, target, confirm=CONFIRM_WORD,
                               pgbouncer_admin_url=env.pgbouncer_admin_url,
                               pgbouncer_database=database_name(env.database_url), requested_by=user,
                               jobs=env.backup_jobs, on_step=on_step,
                               # another place's backup was named in the RESTORE modal the person confirmed
                               allow_other_origin=bool(choice.get("origin")))
    except ActionError as exc:
        where = failed_step[-1] if failed_step else "verify backup"
        if where in BEFORE_SWAP:
            state = "the original database is untouched"
        elif where == "swap":
            state = "the swap did not complete; the sentence above says in which state it left the databases"
        else:
            state = f"the restore finished but {where} failed; check the database now"
        conclude(wf, run_id, user, status=RunStatus.FAILED, result={"target": target},
                 error=f"restore of `{target}` failed at {LABELS.get(where, where)}: {exc}. {state.capitalize()}.")
        return
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("rollback run %s crashed", run_id)
        conclude(wf, run_id, user, status=RunStatus.FAILED, result={"target": target},
                 error=f"internal error: {exc}")
        return
    data = result.to_dict()
    data["summary"] = messages.restore_summary(result)
    runs.update(wf.store, run_id, backup_id=result.snapshot_id)
    conclude(wf, run_id, user, status=RunStatus.SUCCEEDED, result=data)


# --- after a restart ---------------------------------------------------------------------------


async def explain_interrupted(wf: Workflow, run: Run, env: Environment) -> tuple[list[str], str]:
    """Whether the database exists, and which copies a restore kept or left half-way."""
    advice = (f"Check the database before acting; `/rollback {env.name}` starts over, and the safety "
              "snapshot (if it was taken) is among the backups.")
    try:
        dbs = await server_databases(env.migration_url)
    except ActionError as exc:
        return [f"the server could not be examined: {exc}"], advice
    facts = [f"database {dbs.database} {'exists' if dbs.exists else 'DOES NOT EXIST'}"]
    if dbs.previous:
        facts.append(f"databases kept by restores (newest first): {', '.join(dbs.previous)}")
    if dbs.half_restored and not dbs.exists:
        facts.append(f"copies a restore was filling (not in use; check them before dropping): "
                     f"{', '.join(dbs.half_restored)}")
    elif dbs.half_restored:
        # scratch copies are dropped on every path, a crash included: here, on the next start
        # (never while the database itself is missing: then a person decides which copy is which)
        try:
            done = await clean_up(env.migration_url, env.name)
        except ActionError as exc:
            facts.append(f"copies a restore was filling: {', '.join(dbs.half_restored)}; they could not be "
                         f"dropped now ({exc}): `migrabot restore {env.name} --clean-up` drops them")
        else:
            facts.extend(done)
    if not dbs.exists and dbs.previous:
        facts.append(f"if the swap stopped half-way, {dbs.previous[0]} holds the data from before the restore")
    return facts, advice
