"""`/rollback`: restore a chosen backup, or undo the last migration (the runbook's partial rollback).

Both take the environment's lock shared with `/migrate` (never a rollback and a migration
at once) and use the same approvals, reactions and typed confirmation as a migration run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from actions.errors import ActionError
from actions.migrations_dir import sha256_hex
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import blocks as bk
from bot.render import messages
from bot.run_open import open_run, post_or_cancel, preparing, release
from bot.workflow import Workflow
from state import approvals, runs

MAX_BACKUP_OPTIONS = 100  # a static select holds 100 options


# --- restore a backup ---------------------------------------------------------------------------


def backup_choice(info: Any) -> dict[str, Any]:
    return {"id": info.id, "created_at": info.created_at.isoformat(), "size_bytes": info.size_bytes,
            "last_migration": info.last_migration, "kind": info.kind,
            "applied_migrations": list(info.applied_migrations)}


async def request_restore(wf: Workflow, env: Environment, actor: Actor, *, preselect: str | None = None) -> int | None:
    """`/rollback ENV`: list the verified backups in a select menu, newest first."""
    from actions.backup import list_backups

    run_id = await open_run(wf, env, actor, "rollback")
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            backups = [b for b in list_backups(env.backup_dir, env.name) if b.verified]
        except (ActionError, OSError) as exc:
            release(wf, run_id, env.name, "cancelled", error=str(exc))
            await refuse(wf, actor, f"cannot list the backups of {env.name}: {exc}", env=env.name)
            return None
        if not backups:
            release(wf, run_id, env.name, "cancelled", error="no backups")
            await tell(wf, actor, messages.notice(
                f"No verified backups of {env.name} yet. Take one with `migrabot backup {env.name}` "
                f"(every `/migrate {env.name}` run takes one before applying)."))
            return None
        choices = [backup_choice(b) for b in backups[:MAX_BACKUP_OPTIONS]]
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
    from bot.run_controls import operable

    view = await operable(wf, run_id, actor)
    if view is None or view.run["kind"] != "rollback" or view.status != "awaiting":
        if view is not None:
            await refuse(wf, actor, "this rollback is no longer open", run=view.run)
        wf.refresh(run_id)
        return
    run, env = view.run, view.env
    plan = run["plan"]
    choice = next((c for c in plan["backups"] if c["id"] == backup_id), None)
    if choice is None:
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
    from actions.status import migration_status

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
    if run is None or run["status"] != "failed":
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


# --- undo the last migration ------------------------------------------------------------------


async def request_undo(wf: Workflow, env: Environment, actor: Actor) -> int | None:
    """`/rollback ENV last`: the last migration's inverse SQL, shown, linted and approved first."""
    from actions.partial_rollback import plan_undo_last

    run_id = await open_run(wf, env, actor, "undo")
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            plan = await plan_undo_last(env.migration_url, env.migrations_dir)
        except ActionError as exc:
            release(wf, run_id, env.name, "cancelled", error=str(exc))
            await refuse(wf, actor, f"cannot plan an undo on {env.name}: {exc}", env=env.name)
            return None
        if plan.down_sql is None or plan.down_path is None:
            release(wf, run_id, env.name, "cancelled", error=plan.note or "no inverse SQL")
            await tell(wf, actor, messages.notice(
                f":no_entry: {plan.note or 'The last migration has no down.sql or rollback.sql.'}\n"
                f"Restore a backup instead: `/rollback {env.name}`."))
            return None
        lint = await _lint_inverse(wf, plan.migration, plan.down_sql)
        runs.update(wf.store, run_id, plan={"migration": plan.migration, "down_file": plan.down_path.name,
                                            "down_sha256": sha256_hex(plan.down_sql.encode()),
                                            "transactional": plan.transactional, "lint": lint})
        if not await post_or_cancel(wf, run_id, env, actor, f"undo {plan.migration}"):
            return None
        run = runs.get(wf.store, run_id) or {}
        text, blocks = messages.migration_sql(f"{plan.migration} ({plan.down_path.name})", plan.down_sql,
                                              transactional=plan.transactional)
        await wf.reply(run, text, blocks)
        return run_id
    return None


async def _lint_inverse(wf: Workflow, name: str, sql: str) -> dict[str, Any]:
    import asyncio

    try:
        from actions.lint import lint_migrations

        report = await asyncio.to_thread(lint_migrations, [(name, sql)])
        return report.to_dict()
    except (ActionError, OSError) as exc:
        return {"error": str(exc), "migrations": []}


def describe_impact(plan: dict[str, Any]) -> str:
    """The restore's consequences in words, for the run message."""
    impact = plan.get("impact") or {}
    lines = [f"Restoring `{plan['target']}` (taken {bk.duration(impact.get('age_seconds'))} ago):"]
    lines.append("• data written since then is saved in a safety snapshot taken first, not lost")
    undone = impact.get("undone_migrations")
    if undone:
        more = f" … and {len(undone) - 10} more" if len(undone) > 10 else ""
        shown = ", ".join(f"`{n}`" for n in undone[:10]) + more
        lines.append(f"• migrations applied since then are undone: {shown}")
    elif undone is not None:
        lines.append("• no migration was applied since then")
    if impact.get("error"):
        lines.append(f"• {impact['error']}")
    lines.append("• the current database is kept under another name until retention removes it")
    return "\n".join(lines)
