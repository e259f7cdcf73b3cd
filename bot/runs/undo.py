"""`/rollback ENV last`: the runbook's partial rollback, from request to result.

The request (:func:`request_undo`) finds the last applied migration's ``down.sql`` or
``rollback.sql``, lints it and posts it in the thread for approval. The executor
(:func:`execute`) takes a verified backup, runs the inverse SQL with the environment's lock
timeout and retries, removes the migration's ``_prisma_migrations`` row and checks that it is
pending again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actions.advisory_lock import describe_holders
from actions.errors import ActionError
from actions.events import DeployEvent
from actions.humanize import duration
from actions.lint import lint_migrations
from actions.migrations_dir import sha256_hex
from actions.partial_rollback import plan_undo_last, undo_last
from actions.status import migration_status
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.runs.open import end_unstarted, open_run, post_or_cancel, preparing
from bot.runs.steps import StepFailed, backup_first, conclude, step
from bot.workflow import Workflow
from state import runs, steps
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)


async def request_undo(wf: Workflow, env: Environment, actor: Actor) -> int | None:
    """`/rollback ENV last`: the last migration's inverse SQL, shown, linted and approved first."""
    run_id = await open_run(wf, env, actor, "undo")
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            plan = await plan_undo_last(env.migration_url, env.migrations_dir)
        except ActionError as exc:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error=str(exc))
            await refuse(wf, actor, f"cannot plan an undo on {env.name}: {exc}", env=env.name)
            return None
        if plan.down_sql is None or plan.down_path is None:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error=plan.note or "no inverse SQL")
            await tell(wf, actor, messages.no_inverse_sql(env.name, plan.note))
            return None
        lint = await _lint_inverse(wf, plan.migration, plan.down_sql)
        runs.update(wf.store, run_id, plan={"migration": plan.migration, "down_file": plan.down_path.name,
                                            "down_sha256": sha256_hex(plan.down_sql.encode()),
                                            "transactional": plan.transactional, "lint": lint})
        if not await post_or_cancel(wf, run_id, env, actor, f"undo {plan.migration}"):
            return None
        run = runs.get(wf.store, run_id)
        if run is not None:
            await wf.reply(run, *messages.migration_sql(f"{plan.migration} ({plan.down_path.name})", plan.down_sql,
                                                        transactional=plan.transactional))
        return run_id
    return None


async def _lint_inverse(wf: Workflow, name: str, sql: str) -> dict[str, Any]:
    try:
        report = await asyncio.to_thread(lint_migrations, [(name, sql)])
        return report.to_dict()
    except (ActionError, OSError) as exc:
        return {"error": str(exc), "migrations": []}


# --- the executor ------------------------------------------------------------------------------


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    name = run["plan"]["migration"]
    steps.plan(wf.store, run_id, "backup", "Backup (pg_dump)", position=0)
    steps.plan(wf.store, run_id, "undo", f"Undo `{name}`", position=1)
    steps.plan(wf.store, run_id, "status", "Migration status", position=2)
    result: dict[str, Any] = {"migration": name}
    try:
        result["backup_id"] = await backup_first(wf, run_id, env, user, 0, f"before undo of {name} (run {run_id})")
        async with step(wf, run_id, "undo", f"Undo `{name}`", 1) as note:
            def on_event(event: DeployEvent) -> None:
                if event.kind == "retrying":
                    who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
                    steps.note(wf.store, run_id, "undo", f"lock timeout, retry {event.attempt} (blocked by {who})")
                    wf.refresh(run_id)

            undone = await undo_last(env.migration_url, env.migrations_dir, expected_migration=name,
                                     lock_timeout=env.lock_timeout, statement_timeout=env.statement_timeout,
                                     retry=env.retry, advisory_lock_timeout=env.advisory_lock_timeout,
                                     on_event=on_event, connect_timeout=env.connect_timeout,
                                     expected_sha256=run["plan"].get("down_sha256"))
            if not undone.ok:
                result["logs"] = undone.logs
                note["detail"] = f"failed: {(undone.logs or '')[:300]}"
                if run["plan"].get("transactional", True):
                    raise StepFailed(f"the inverse SQL of `{name}` failed and was rolled back, so nothing changed: "
                                     f"{undone.logs or ''}")
                reached = f" at {undone.statement}" if undone.statement else ""
                raise StepFailed(f"the inverse SQL of `{name}` runs outside a transaction and failed{reached}: the "
                                 f"statements before it stay applied, and `{name}` is still recorded as applied. "
                                 f"Finish or undo them by hand. {undone.logs or ''}")
            note["detail"] = f"inverse SQL ran and the row was removed ({duration(undone.duration)})"
        async with step(wf, run_id, "status", "Migration status", 2) as note:
            status = await migration_status(env.migration_url, env.migrations_dir)
            if name not in status.pending:
                note["detail"] = f"`{name}` is NOT pending"
                raise StepFailed(f"the inverse SQL ran but `{name}` is not pending afterwards; check "
                                 f"`/migrate status {env.name}`")
            note["detail"] = f"`{name}` is pending again"
        result["summary"] = (f"`{name}` was undone; it is pending again. Backup `{result['backup_id']}` "
                             "was taken first.")
        conclude(wf, run_id, user, status=RunStatus.SUCCEEDED, result=result)
    except StepFailed as exc:
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result, error=str(exc))
    except Exception as exc:
        log.exception("undo run %s crashed", run_id)
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result, error=f"internal error: {exc}")


# --- after a restart ---------------------------------------------------------------------------


async def explain_interrupted(wf: Workflow, run: Run, env: Environment) -> tuple[list[str], str]:
    """Whether the undone migration is pending again, from ``_prisma_migrations``."""
    advice = f"Check `/migrate status {env.name}` before asking again."
    name = (run.get("plan") or {}).get("migration", "")
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
    except ActionError as exc:
        return [f"the database could not be examined: {exc}"], advice
    undone = name in status.pending
    facts = [f"{name} is " + ("pending again: the undo went through" if undone
                              else "still applied: the undo did not happen")]
    holder = await describe_holders(env.migration_url)
    if holder:
        facts.append(f"the migration lock is still held by {holder}: something is still running")
    return facts, advice
