"""`/migrate`: a migration run from request to result.

The request (:func:`request_run`): plan the pending migrations, take the environment's lock,
post the run message with its checklist and approvals, post each migration's SQL in the thread.
The executor (:func:`execute`): the runbook's migration script, step by step: pre-flight →
backup (``pg_dump``, verified) → status → each migration → verification. Every step is
written to state before and after it happens, so a restart in the middle leaves a run that
:func:`explain_interrupted` can explain. No migration is applied unless the backup of this
run verified.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from actions.advisory_lock import describe_holders
from actions.backup import preflight
from actions.db import ping
from actions.deploy import deploy, refuse_unsafe_state
from actions.errors import ActionError
from actions.events import DeployEvent
from actions.health import check_health_url
from actions.humanize import duration
from actions.lint import lint_folder
from actions.migrations_dir import load_migration
from actions.status import MigrationStatus, migration_status
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.rules import checklist
from bot.rules.checks import run_checks
from bot.runs.controls import abort, operable
from bot.runs.open import end_unstarted, open_run, post_or_cancel, preparing
from bot.runs.steps import StepFailed, backup_first, conclude, settle_step, step
from bot.workflow import Workflow
from state import locks, runs, steps, ticks
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)


# --- planning -----------------------------------------------------------------------------------


async def compute_plan(wf: Workflow, env: Environment) -> tuple[dict[str, Any], MigrationStatus]:
    """Pending migrations (names, checksums, SQL facts) and their lint, or ActionError."""
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
    run_id = await open_run(wf, env, actor, "migrate",
                            status=RunStatus.SCHEDULED if scheduled_for else RunStatus.AWAITING)
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        try:
            plan, _status = await compute_plan(wf, env)
        except ActionError as exc:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error=str(exc))
            await refuse(wf, actor, f"cannot plan a run on {env.name}: {exc}", env=env.name)
            return None
        if not plan["migrations"]:
            end_unstarted(wf, run_id, RunStatus.CANCELLED, error="nothing pending")
            wf.audit(actor.user, "request_nothing_pending", env=env.name)
            await tell(wf, actor, messages.up_to_date(env.name))
            return None
        runs.update(wf.store, run_id, plan=plan, scheduled_for=scheduled_for)
        if not await post_or_cancel(wf, run_id, env, actor, ", ".join(m["name"] for m in plan["migrations"])):
            return None
        run = runs.get(wf.store, run_id)
        if run is not None:
            await post_sql(wf, env, run)
        await recheck(wf, run_id, actor, silent=True)
        return run_id
    return None


async def post_sql(wf: Workflow, env: Environment, run: Run) -> None:
    """Every pending migration's SQL in the thread, for the "Review migration files" item."""
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
    if run is None or run["status"] not in runs.WAITING:
        if not silent:
            await refuse(wf, actor, "this run is no longer waiting; nothing to re-check", run=run)
        return
    env = wf.env(run["env"])
    checks = await run_checks(wf.config, env, run["plan"], channel_name=actor.channel_name)
    runs.update(wf.store, run_id, checks=checks)
    if not silent:
        wf.audit(actor.user, "recheck", run=run)
    wf.refresh(run_id)


async def tick(wf: Workflow, run_id: int, actor: Actor, selected: list[str]) -> None:
    """The checklist's checkboxes changed: record who ticked or unticked what."""
    view = await operable(wf, run_id, actor)
    if view is None or view.status not in runs.WAITING:
        if view is not None:
            await refuse(wf, actor, "this run is no longer open; the checklist cannot change", run=view.run)
        wf.refresh(run_id)  # puts the boxes back as they were
        return
    run = view.run
    checks = run.get("checks") or {}
    current = ticks.ticks(wf.store, run_id)
    for key in checklist.ITEM_KEYS:
        if checks.get(key, {}).get("status") != "manual":
            continue
        now_checked = key in selected
        was_checked = bool(current.get(key, {}).get("checked"))
        if now_checked != was_checked:
            ticks.tick(wf.store, run_id, key, now_checked, by=actor.user, source="person")
            wf.audit(actor.user, "tick" if now_checked else "untick", run=run, detail=checklist.LABELS[key])
    wf.refresh(run_id)


async def abort_env(wf: Workflow, env: Environment, actor: Actor) -> None:
    """`/migrate abort ENV`: the run holding the environment (a terminate may be open beside it)."""
    holder = locks.holder_of(wf.store, env.name)
    open_runs = runs.open_runs(wf.store, env.name)
    if holder is None and not open_runs:
        await tell(wf, actor, messages.nothing_to_abort(env.name))
        return
    await abort(wf, holder["run_id"] if holder else open_runs[-1]["id"], actor)


async def show_status(wf: Workflow, env: Environment, actor: Actor) -> None:
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
    if run is None or run["status"] != RunStatus.FAILED:
        await refuse(wf, actor, "only a failed run takes an incident decision", run=run)
        return
    runs.update(wf.store, run_id, decision=f"fix forward, decided by <@{actor.user}>")
    wf.audit(actor.user, "decide_fix_forward", run=run)
    await wf.reply(run, *messages.fix_forward_decided(actor.user))
    wf.refresh(run_id)


# --- the executor ------------------------------------------------------------------------------


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
        result["summary"] = messages.migrate_summary(result["applied"], result["duration"], result["backup_id"],
                                                     result["verification"])
        conclude(wf, run_id, user, status=RunStatus.SUCCEEDED, result=result)
    except _Abort:
        result["duration"] = time.monotonic() - started
        done = ", ".join(result["applied"]) or "none"
        conclude(wf, run_id, user, status=RunStatus.ABORTED, result=result,
                 error=f"aborted on request; migrations applied before the abort: {done}")
    except StepFailed as exc:
        result.update(exc.result)
        result["duration"] = time.monotonic() - started
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result, error=str(exc))
        await _post_incident(wf, run_id, result, str(exc))
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("run %s crashed", run_id)
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result,
                 error=f"internal error: {exc}; the database state is preserved in the backup")
        await _post_incident(wf, run_id, result, f"internal error: {exc}")


async def _preflight(wf: Workflow, run_id: int, env: Environment) -> None:
    """The runbook's pre-flight: the database answers; plus the backup pre-flight."""
    async with step(wf, run_id, "preflight", "Pre-flight checks", 0) as note:
        await ping(env.database_url, timeout=env.connect_timeout)
        checks = await preflight(env.migration_url, env.backup_dir, env.name, free_margin=env.backup_free_margin)
        failed = [c for c in checks if not c.ok]
        if failed:
            note["detail"] = "; ".join(c.message for c in failed)
            raise StepFailed(f"pre-flight failed: {note['detail']}")
        note["detail"] = "database reachable, backup pre-flight passed"


async def _status(wf: Workflow, run_id: int, env: Environment, names: list[str]) -> None:
    async with step(wf, run_id, "status", "Migration status", 2) as note:
        status = await migration_status(env.migration_url, env.migrations_dir)
        refuse_unsafe_state(status)
        if status.pending != names:
            note["detail"] = f"pending now: {', '.join(status.pending) or 'none'}; approved: {', '.join(names)}"
            raise StepFailed("the pending migrations changed since approval, so nothing was applied; "
                             f"request a new run ({note['detail']})")
        note["detail"] = f"{len(status.pending)} pending; current version: {status.last_applied or 'none'}"


async def _apply(wf: Workflow, run_id: int, env: Environment, names: list[str]) -> list[str]:
    run = runs.get(wf.store, run_id)
    assert run is not None
    checksums = {m["name"]: m["checksum"] for m in run["plan"]["migrations"]}
    applied: list[str] = []
    reported_blockers: set[int] = set()

    async def on_event(event: DeployEvent) -> None:
        migration = event.migration or ""
        name = f"migration:{migration}" if migration else None
        if event.kind == "started" and name and event.attempt == 1:
            steps.start(wf.store, run_id, name, f"Apply `{migration}`", position=3 + names.index(migration))
            runs.update(wf.store, run_id, current_step=name)
        elif event.kind == "retrying" and name:
            who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
            steps.note(wf.store, run_id, name, f"lock timeout, retry {event.attempt} (blocked by {who})")
            fresh = [b for b in event.blockers if b.pid not in reported_blockers]
            if fresh:  # the thread hears about each blocker once, not on every retry
                reported_blockers.update(b.pid for b in fresh)
                await wf.reply(run, *messages.waiting_for_lock(migration, env.name,
                                                               [b.describe() for b in fresh]))
        elif event.kind == "finished" and name:
            applied.append(migration)
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
    async with step(wf, run_id, "verify", "Verification", position) as note:
        status = await migration_status(env.migration_url, env.migrations_dir)
        parts = ["status clean" if status.up_to_date else "status NOT clean"]
        parts.append(f"connectivity ok ({duration(await ping(env.database_url, timeout=env.connect_timeout))})")
        if env.health_url:
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


# --- after a restart ---------------------------------------------------------------------------


async def explain_interrupted(wf: Workflow, run: Run, env: Environment) -> tuple[list[str], str]:
    """What ``_prisma_migrations`` and the advisory lock say about a run the bot lost, and what to do."""
    plan = run.get("plan") or {}
    names = [m["name"] for m in plan.get("migrations", [])]
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
    except ActionError as exc:
        return [f"the database could not be examined: {exc}"], "Start a new `/migrate` to continue."
    failed = {f.name: f for f in status.failed}
    applied = []
    for name in names:
        step_name = f"migration:{name}"
        if name in status.applied_checksums:
            applied.append(name)
            settle_step(wf, run["id"], step_name, "done", "applied (found in _prisma_migrations after the restart)")
        elif name in failed:
            settle_step(wf, run["id"], step_name, "failed", f"failed: {(failed[name].logs or '')[:300]}")
        else:
            settle_step(wf, run["id"], step_name, "skipped", "not started")
    run["result"] = {**(run.get("result") or {}), "applied": applied}
    facts = [f"applied: {', '.join(applied) or 'none'}"]
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
    holder = await describe_holders(env.migration_url)
    if holder:
        facts.append(f"the migration lock is still held by {holder}: something is still running")
    return facts, "Start a new `/migrate` to continue."

