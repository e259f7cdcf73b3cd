"""`/migrate resolve ENV NAME applied|rolled-back` and the incident's "Mark rolled back".

Prisma's `migrate resolve` from the channel: needs one approval where the environment
requires approvals, and runs at once where it does not.
"""

from __future__ import annotations

from actions.errors import ActionError
from bot.actor import Actor, refuse
from bot.config import Environment
from bot.run_controls import start
from bot.run_open import open_run, post_or_cancel, preparing
from bot.workflow import Workflow
from state import runs


async def request_resolve(wf: Workflow, env: Environment, actor: Actor, migration: str, as_: str) -> int | None:
    from actions.resolve import resolve_problem

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
    failed = ((run or {}).get("result") or {}).get("failed_migration")
    if run is None or run["status"] != "failed" or not failed:
        await refuse(wf, actor, "only a failed migration can be marked rolled back", run=run)
        return
    runs.update(wf.store, run_id, decision=f"mark {failed} rolled back, decided by <@{actor.user}>")
    wf.audit(actor.user, "decide_mark_rolled_back", run=run)
    wf.refresh(run_id)
    await request_resolve(wf, wf.env(run["env"]), actor, failed, "rolled-back")
