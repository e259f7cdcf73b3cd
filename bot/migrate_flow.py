"""The `/migrate` run from request to Run: plan, lock, checklist, approvals, typed confirmation.

Handlers call these after ``ack()``. Every refusal goes to the person who acted,
ephemeral, and into the audit log; every change re-renders the run message.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from actions.errors import ActionError
from bot import checklist
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.run_open import open_run, post_or_cancel, preparing, release
from bot.workflow import Workflow
from state import checklist as ticks_state
from state import locks, runs

log = logging.getLogger(__name__)


# --- planning -----------------------------------------------------------------------------------


async def compute_plan(wf: Workflow, env: Environment) -> tuple[dict[str, Any], Any]:
    """Pending migrations (names, checksums, SQL facts) and their lint, or ActionError."""
    from actions.deploy import refuse_unsafe_state
    from actions.status import migration_status

    status = await migration_status(env.migration_url, env.migrations_dir)
    refuse_unsafe_state(status)
    local = {m.name: m for m in status.local}
    migrations = [{"name": n, "checksum": local[n].checksum, "transactional": local[n].transactional}
                  for n in status.pending]
    return {"migrations": migrations, "lint": await lint_plan(wf, env, status.pending)}, status


async def lint_plan(wf: Workflow, env: Environment, names: list[str]) -> dict[str, Any]:
    if not names:
        return {"migrations": [], "zero_downtime_safe": True}
    try:
        from actions.lint import lint_folder

        kwargs: dict[str, Any] = {}
        if wf.config.lint_exclude:
            kwargs["exclude"] = wf.config.lint_exclude
        report = await asyncio.to_thread(lint_folder, Path(env.migrations_dir), names, **kwargs)
        return report.to_dict()
    except (ActionError, ImportError, OSError) as exc:
        return {"error": str(exc), "migrations": []}


# --- commands -------------------------------------------------------------------------------------


async def request_run(wf: Workflow, env: Environment, actor: Actor, *, scheduled_for: str | None = None) -> int | None:
    """`/migrate ENV`: take the environment's lock, post the run message, start the checks."""
    run_id = await open_run(wf, env, actor, "migrate", status="scheduled" if scheduled_for else "awaiting")
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            plan, _status = await compute_plan(wf, env)
        except ActionError as exc:
            release(wf, run_id, env.name, "cancelled", error=str(exc))
            await refuse(wf, actor, f"cannot plan a run on {env.name}: {exc}", env=env.name)
            return None
        if not plan["migrations"]:
            release(wf, run_id, env.name, "cancelled", error="nothing pending")
            wf.audit(actor.user, "request_nothing_pending", env=env.name)
            await tell(wf, actor, messages.notice(f":white_check_mark: {env.name} is up to date: no pending "
                                                  "migrations."))
            return None
        runs.update(wf.store, run_id, plan=plan, scheduled_for=scheduled_for)
        if not await post_or_cancel(wf, run_id, env, actor, ", ".join(m["name"] for m in plan["migrations"])):
            return None
        await post_sql(wf, env, runs.get(wf.store, run_id) or {})
        await recheck(wf, run_id, actor, silent=True)
        return run_id
    return None


async def post_sql(wf: Workflow, env: Environment, run: dict[str, Any]) -> None:
    """Every pending migration's SQL in the thread, for the "Review migration files" item."""
    from actions.migrations_dir import load_migration

    for m in run["plan"]["migrations"]:
        try:
            sql = load_migration(Path(env.migrations_dir) / m["name"]).sql
        except ActionError as exc:
            sql = f"({exc})"
        text, blocks = messages.migration_sql(m["name"], sql, transactional=m.get("transactional", True))
        await wf.reply(run, text, blocks)


async def recheck(wf: Workflow, run_id: int, actor: Actor, *, silent: bool = False) -> None:
    """Run the bot's own checklist checks again (the Re-check button)."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in ("awaiting", "scheduled"):
        if not silent:
            await refuse(wf, actor, "this run is no longer waiting; nothing to re-check", run=run)
        return
    env = wf.env(run["env"])
    checks = await checklist.run_checks(wf.config, env, run["plan"], channel_name=actor.channel_name)
    runs.update(wf.store, run_id, checks=checks)
    if not silent:
        wf.audit(actor.user, "recheck", run=run)
    wf.refresh(run_id)


async def tick(wf: Workflow, run_id: int, actor: Actor, selected: list[str]) -> None:
    """The checklist's checkboxes changed: record who ticked or unticked what."""
    from bot.run_controls import operable

    view = await operable(wf, run_id, actor)
    if view is None or view.status not in ("awaiting", "scheduled"):
        if view is not None:
            await refuse(wf, actor, "this run is no longer open; the checklist cannot change", run=view.run)
        wf.refresh(run_id)  # puts the boxes back as they were
        return
    run = view.run
    checks = run.get("checks") or {}
    current = ticks_state.ticks(wf.store, run_id)
    for key in checklist.ITEM_KEYS:
        if checks.get(key, {}).get("status") != "manual":
            continue
        now_checked = key in selected
        was_checked = bool(current.get(key, {}).get("checked"))
        if now_checked != was_checked:
            ticks_state.tick(wf.store, run_id, key, now_checked, by=actor.user, source="person")
            wf.audit(actor.user, "tick" if now_checked else "untick", run=run, detail=checklist.LABELS[key])
    wf.refresh(run_id)


async def abort_env(wf: Workflow, env: Environment, actor: Actor) -> None:
    """`/migrate abort ENV`: the run holding the environment (a terminate may be open beside it)."""
    from bot.run_controls import abort

    holder = locks.holder_of(wf.store, env.name)
    open_runs = runs.open_runs(wf.store, env.name)
    if holder is None and not open_runs:
        await tell(wf, actor, messages.notice(f"No open run on {env.name}; nothing to abort."))
        return
    await abort(wf, holder["run_id"] if holder else open_runs[-1]["id"], actor)


async def show_status(wf: Workflow, env: Environment, actor: Actor) -> None:
    from actions.status import migration_status

    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
    except ActionError as exc:
        await refuse(wf, actor, f"cannot read the status of {env.name}: {exc}", env=env.name)
        return
    data = status.to_dict()
    await tell(wf, actor, messages.status_message(env.name, data))


async def show_plan(wf: Workflow, env: Environment, actor: Actor) -> None:
    try:
        plan, _ = await compute_plan(wf, env)
    except ActionError as exc:
        await refuse(wf, actor, f"cannot plan {env.name}: {exc}", env=env.name)
        return
    await tell(wf, actor, messages.plan_message(env.name, plan["migrations"], plan["lint"]))


async def show_history(wf: Workflow, env: Environment, actor: Actor) -> None:
    await tell(wf, actor, messages.history_message(env.name, runs.history(wf.store, env.name)))


async def fix_forward(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The incident's "Fix forward" button: the decision is recorded and shown."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] != "failed":
        await refuse(wf, actor, "only a failed run takes an incident decision", run=run)
        return
    runs.update(wf.store, run_id, decision=f"fix forward, decided by <@{actor.user}>")
    wf.audit(actor.user, "decide_fix_forward", run=run)
    await wf.reply(run, f":hammer_and_wrench: <@{actor.user}> decided to fix forward. "
                        "Ship a new migration; `/migrate resolve` marks the failed one first.")
    wf.refresh(run_id)
