"""`/migrate resolve ENV NAME applied|rolled-back` and the incident's "Mark rolled back".

Prisma's `migrate resolve` from the channel: needs one approval where the environment
requires approvals (see the kinds table), and runs at once where it does not. The executor
marks the migration in ``_prisma_migrations`` exactly as Prisma's CLI would.
"""

from __future__ import annotations

import logging

from actions.errors import ActionError
from actions.resolve import resolve_applied, resolve_problem, resolve_rolled_back
from bot.actor import Actor, refuse
from bot.config import Environment
from bot.runs.controls import start
from bot.runs.open import open_run, post_or_cancel, preparing
from bot.runs.steps import StepFailed, conclude, step
from bot.workflow import Workflow
from state import runs
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)


async def request_resolve(wf: Workflow, env: Environment, actor: Actor, migration: str, as_: str) -> int | None:
    try:
        problem = await resolve_problem(env.migration_url, env.migrations_dir, migration, as_)
    except ActionError as exc:
        problem = str(exc)
    if problem:
        await refuse(wf, actor, problem, env=env.name)
        return None
    run_id = await open_run(wf, env, actor, "resolve", plan={"migration": migration, "as": as_})
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        if not await post_or_cancel(wf, run_id, env, actor, f"resolve {migration} {as_}"):
            return None
        view = await wf.view(run_id)
        if view is not None and view.ready:
            await start(wf, run_id, actor)  # no approval needed here: do what was typed
        return run_id
    return None


async def from_incident(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The incident's "Mark rolled back": resolve the failed migration so a fixed deploy can run it again."""
    run = runs.get(wf.store, run_id)
    failed = ((run["result"] if run else None) or {}).get("failed_migration")
    if run is None or run["status"] != RunStatus.FAILED or not failed:
        await refuse(wf, actor, "only a failed migration can be marked rolled back", run=run)
        return
    runs.update(wf.store, run_id, decision=f"mark {failed} rolled back, decided by <@{actor.user}>")
    wf.audit(actor.user, "decide_mark_rolled_back", run=run)
    wf.refresh(run_id)
    await request_resolve(wf, wf.env(run["env"]), actor, failed, "rolled-back")


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    name, as_ = run["plan"]["migration"], run["plan"]["as"]
    try:
        async with step(wf, run_id, "resolve", f"Mark `{name}` {as_}", 0) as note:
            resolve = resolve_applied if as_ == "applied" else resolve_rolled_back
            note["detail"] = await resolve(env.migration_url, env.migrations_dir, name,
                                           advisory_lock_timeout=env.advisory_lock_timeout)
        conclude(wf, run_id, user, status=RunStatus.SUCCEEDED, result={"summary": note["detail"]})
    except StepFailed as exc:
        conclude(wf, run_id, user, status=RunStatus.FAILED, result={}, error=str(exc))
    except Exception as exc:
        log.exception("resolve run %s crashed", run_id)
        conclude(wf, run_id, user, status=RunStatus.FAILED, result={}, error=f"internal error: {exc}")


async def explain_interrupted(wf: Workflow, run: Run, env: Environment) -> tuple[list[str], str]:
    """A resolve is one short statement: its row either changed or not; people check."""
    return ["its result is unknown"], "Check by hand before asking again."
