"""`/migrate`: a migration run from request to result.

The request (:func:`request_run`): plan the pending migrations, take the environment's lock,
post the run message with its checklist and approvals, post each migration's SQL in the thread.
The executor (:func:`execute`): the runbook's migration script (``actions/procedure.py``, the
same steps the CLI runs): pre-flight → backup (``pg_dump``, verified) → status → each migration →
verification. Every step is written to state before and after it happens, so a restart in the
middle leaves a run that :func:`explain_interrupted` can explain. No migration is applied unless
the backup of this run verified.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import asyncpg

from actions.advisory_lock import describe_holders
from actions.deploy import refuse_unsafe_state
from actions.errors import ActionError
from actions.events import DeployEvent
from actions.impact import impact
from actions.lint import lint_folder
from actions.migrations_dir import load_migration
from actions.procedure import run_migrate
from actions.status import FailedMigration, MigrationStatus, migration_status
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import blocks as bk
from bot.render import impact as impact_render
from bot.render import messages
from bot.rules import checklist
from bot.rules.checks import run_checks
from bot.runs.controls import abort, operable
from bot.runs.findings import note_rehearsal, post_findings
from bot.runs.open import end_unstarted, new_input_version, open_run, post_or_cancel, preparing
from bot.runs.steps import StateRecorder, StepFailed, conclude, settle_step
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
    lint, estimates = await asyncio.gather(lint_plan(wf, env, status.pending), impact_plan(env, status))
    return {"migrations": migrations, "lint": lint, "impact": estimates}, status


async def impact_plan(env: Environment, status: MigrationStatus) -> dict[str, Any]:
    """Per pending statement: its lock level, the live table's size and rows, who it would wait for.

    The write rate is not sampled (it needs two samples seconds apart): the plan stays quick.
    """
    if not status.pending:
        return {"migrations": []}
    local = status.local_by_name()
    try:
        report = await impact(env.migration_url, [(n, local[n].sql) for n in status.pending],
                              lock_timeout=env.lock_timeout, write_rate_interval=0.0, timeout=env.connect_timeout)
    except (ActionError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return {"error": str(exc), "migrations": []}
    return report.to_dict()


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
            # the checklist's own checks first, shown within seconds; the review item waits for the SQL,
            # posted next and paced for Slack (a thousand migrations take minutes)
            runs.update(wf.store, run_id, plan={**run["plan"], "sql_posting": True})
            await recheck(wf, run_id, actor, silent=True)
            run = runs.get(wf.store, run_id) or run
            await post_sql(wf, env, run)
            if impact_render.impact_blocks(plan):
                await wf.reply(run, f"Impact estimates for {env.name}", impact_render.impact_blocks(plan))
            fresh = runs.get(wf.store, run_id)
            if fresh is not None:
                runs.update(wf.store, run_id, plan={k: v for k, v in fresh["plan"].items() if k != "sql_posting"})
        await recheck(wf, run_id, actor, silent=True)
        return run_id
    return None


async def post_sql(wf: Workflow, env: Environment, run: Run, names: list[str] | None = None) -> None:
    """The pending migrations' SQL in the thread, for the "Review migration files" item.

    Several migrations share a reply (Slack allows about one message per second per channel);
    a reply Slack still refuses after its retries is remembered in the plan (``sql_unposted``), so
    the review item fails until Re-check posts it: nobody ticks a review of SQL they cannot see.
    """
    wanted = [m for m in run["plan"]["migrations"] if names is None or m["name"] in names]
    items = []
    for m in wanted:
        try:
            sql = load_migration(Path(env.migrations_dir) / m["name"]).sql
        except ActionError as exc:
            sql = f"({exc})"
        items.append((m["name"], sql, m.get("transactional", True)))
    unposted: list[str] = []
    start = 0
    for text, blocks in messages.migrations_sql(items):
        count = sum(1 for b in blocks if b["text"]["text"].startswith("```"))
        if await wf.reply(run, text, blocks) is None:
            unposted += [name for name, _, _ in items[start:start + count]]
        start += count
    fresh = runs.get(wf.store, run["id"])
    if fresh is not None and (unposted or fresh["plan"].get("sql_unposted")):
        runs.update(wf.store, run["id"], plan={**fresh["plan"], "sql_unposted": unposted})
    await wf.note_delays(run["id"])


async def recheck(wf: Workflow, run_id: int, actor: Actor, *, silent: bool = False) -> None:
    """Run the bot's own checklist checks again (the Re-check button)."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in runs.WAITING:
        if not silent:
            await refuse(wf, actor, "this run is no longer waiting; nothing to re-check", run=run)
        return
    env = wf.env(run["env"])
    if run["plan"].get("sql_unposted"):  # the SQL Slack refused before: post it now
        await post_sql(wf, env, run, run["plan"]["sql_unposted"])
        run = runs.get(wf.store, run_id) or run
    run = note_rehearsal(wf, run_id, env) or run
    found: dict[str, Any] = {}
    checks = await run_checks(wf.config, env, run["plan"], found=found)
    runs.update(wf.store, run_id, checks=checks)
    if not silent:
        wf.audit(actor.user, "recheck", run=run)
    wf.refresh(run_id)
    await post_findings(wf, run, env, checks, found)


async def tick(wf: Workflow, run_id: int, actor: Actor, selected: list[str],
               shown: list[str] | None = None) -> None:
    """A checkbox click: apply the change it made to the ticks the bot holds.

    Slack sends the clicker's whole selection as *their* client showed it, and the message as
    they last saw it (``shown``: the options ticked there). Two people clicking from the same
    version each send their own set, so the click's change is the difference between the two;
    taking the set as the truth would untick what the other person just ticked. A person whose
    view was out of date is told what the checklist holds now. Without ``shown`` (an ephemeral
    message carries no ``message``), the selection is the change.
    """
    view = await operable(wf, run_id, actor)
    if view is None or view.status not in runs.WAITING:
        if view is not None:
            new_input_version(wf, run_id)
            await refuse(wf, actor, "this run is no longer open; the checklist cannot change", run=view.run)
        wf.refresh(run_id)  # puts the boxes back as they were
        return
    run = view.run
    checks = run.get("checks") or {}
    current = ticks.ticks(wf.store, run_id)
    held = {k for k, t in current.items() if t.get("checked")}
    before = set(shown) if shown is not None else held
    now = set(selected)
    changes = {k: True for k in now - before} | {k: False for k in before - now}
    for key, checked in changes.items():
        if key not in checklist.ITEM_KEYS or checks.get(key, {}).get("status") != "manual":
            continue
        if checked != (key in held):
            ticks.tick(wf.store, run_id, key, checked, by=actor.user, source="person")
            wf.audit(actor.user, "tick" if checked else "untick", run=run, detail=checklist.LABELS[key])
    merged = {k for k, t in ticks.ticks(wf.store, run_id).items() if t.get("checked")}
    if merged != now:  # the clicker's boxes differ from what the checklist holds: new boxes for everyone
        new_input_version(wf, run_id)
    wf.refresh(run_id)
    if shown is not None and before != held:
        await tell(wf, actor, messages.stale_checklist(
            [checklist.LABELS[k] for k in sorted(merged) if k in checklist.LABELS]))


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
    text, blocks = messages.plan_message(env.name, plan["migrations"], plan["lint"])
    await tell(wf, actor, (text, bk.fit_blocks([*blocks, *impact_render.impact_blocks(plan)])))


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


def _aborted(wf: Workflow, run_id: int) -> bool:
    run = runs.get(wf.store, run_id)
    return bool(run and run.get("abort_requested"))


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    """The runbook's procedure (actions/procedure.py) with this run's approved migrations, shown live."""
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    names = [m["name"] for m in run["plan"]["migrations"]]
    checksums = {m["name"]: m["checksum"] for m in run["plan"]["migrations"]}
    reported_blockers: set[int] = set()

    async def on_event(event: DeployEvent) -> None:
        fresh = [b for b in event.blockers if b.pid not in reported_blockers]
        # the thread hears about each blocker once (waited for, or timed out behind), not on every look or retry
        if event.kind in ("waiting", "retrying") and fresh:
            reported_blockers.update(b.pid for b in fresh)
            await wf.reply(run, *messages.waiting_for_lock(event.migration or "", env.name,
                                                           [b.describe() for b in fresh]))

    started = time.monotonic()
    result: dict[str, Any] = {"applied": []}
    try:
        outcome = await run_migrate(
            env, names, checksums, StateRecorder(wf, run_id), requested_by=user,
            reason=f"before migrate run {run_id}", should_continue=lambda: not _aborted(wf, run_id),
            on_event=on_event, on_backup=lambda backup_id: runs.update(wf.store, run_id, backup_id=backup_id))
    except StepFailed as exc:
        result.update(exc.result)
        result["duration"] = time.monotonic() - started
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result, error=str(exc))
        await _post_incident(wf, run_id, result, str(exc))
        return
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("run %s crashed", run_id)
        conclude(wf, run_id, user, status=RunStatus.FAILED, result=result,
                 error=f"internal error: {exc}; the database state is preserved in the backup")
        await _post_incident(wf, run_id, result, f"internal error: {exc}")
        return
    result.update(outcome.to_dict())
    if outcome.aborted:
        done = ", ".join(outcome.applied) or "none"
        conclude(wf, run_id, user, status=RunStatus.ABORTED, result=result,
                 error=f"aborted on request; migrations applied before the abort: {done}")
        return
    result["summary"] = messages.migrate_summary(outcome.applied, outcome.duration, outcome.backup_id or "",
                                                 outcome.verification)
    conclude(wf, run_id, user, status=RunStatus.SUCCEEDED, result=result)


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
    """What ``_prisma_migrations`` and the advisory lock say about a run the bot lost, and what to do.

    A migration whose unfinished row belongs to a session that still holds the migration lock
    is still running on the server (a process killed mid-file leaves its statement running, and a
    transactional file then commits): it is reported as running in that pid, its step left
    unknown, never as failed; `/migrate status` tells how it ended.
    """
    plan = run.get("plan") or {}
    names = [m["name"] for m in plan.get("migrations", [])]
    try:
        status = await migration_status(env.migration_url, env.migrations_dir)
    except ActionError as exc:
        return [f"the database could not be examined: {exc}"], "Start a new `/migrate` to continue."
    failed = {f.name: f for f in status.failed}
    running = {r.name: r for r in status.running}
    applied = []
    for name in names:
        step_name = f"migration:{name}"
        if name in status.applied_checksums:
            applied.append(name)
            settle_step(wf, run["id"], step_name, "done", "applied (found in _prisma_migrations after the restart)")
        elif name in running:
            settle_step(wf, run["id"], step_name, "unknown",
                        f"still running in pid {running[name].pid} when the bot restarted: "
                        f"`/migrate status {env.name}` tells how it ended")
        elif name in failed:
            why = failed[name].logs or _no_outcome(failed[name])
            settle_step(wf, run["id"], step_name, "failed", f"failed: {why[:300]}")
        else:
            settle_step(wf, run["id"], step_name, "skipped", "not started")
    run["result"] = {**(run.get("result") or {}), "applied": applied}
    facts = [f"applied: {', '.join(applied) or 'none'}"]
    for name, r in running.items():
        facts.append(f"still running: {name} in pid {r.pid} (the server is still applying it; it may yet commit): "
                     f"check `/migrate status {env.name}` once it ends, and do not resolve it before")
    for name, f in failed.items():
        if f.partly_applied or (f.progress is not None and f.progress.interrupted):
            done = f.progress.describe() if f.progress else f.partly_applied
            how = (f"it runs outside a transaction: {done}; finish or undo that part by hand, then "
                   f"`/migrate resolve {env.name} {name} applied` or `rolled-back`")
        elif not _transactional(plan, name):
            how = ("it runs outside a transaction, so part of it may be applied: finish or undo that part by "
                   f"hand, then `/migrate resolve {env.name} {name} applied` or `rolled-back`")
        else:
            how = f"its changes were rolled back: fix it, then `/migrate resolve {env.name} {name} rolled-back`"
        facts.append(f"failed: {name} ({how})")
    not_started = [n for n in names if n not in applied and n not in failed and n not in running]
    if not_started:
        facts.append(f"not started: {', '.join(not_started)}")
    if not running:
        holder = await describe_holders(env.migration_url)
        if holder:
            facts.append(f"the migration lock is still held by {holder}: something is still running")
    advice = ("Start a new `/migrate` to continue." if not running else
              f"Check `/migrate status {env.name}` after it ends, then start a new `/migrate` for what is left. "
              "The bot looks again until it ends and says in the thread how it ended.")
    if running:
        wf.spawn(follow_still_running(wf, run["id"], env, {n: r.pid for n, r in running.items()}), "follow-up")
    return facts, advice


FOLLOW_UP_EVERY = 3.0  # seconds between looks at a migration the server was still applying
FOLLOW_UP_FOR = 12 * 3600.0  # a migration still running after this is left to `/migrate status`


async def follow_still_running(wf: Workflow, run_id: int, env: Environment, pids: dict[str, int]) -> None:
    """Look again until each migration the server was still applying has ended; say how it ended.

    The interrupted run said "still running in pid N": that was true, and it must not stay the
    last word once the server has committed (or failed) the file. Each outcome goes in the
    migration's step and in the thread.
    """
    deadline = time.monotonic() + FOLLOW_UP_FOR
    left = dict(pids)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(FOLLOW_UP_EVERY)
        try:
            status = await migration_status(env.migration_url, env.migrations_dir)
        except ActionError as exc:
            log.info("follow-up of run %s: the database could not be examined: %s", run_id, exc)
            continue
        still = {r.name for r in status.running}
        failed = {f.name: f for f in status.failed}
        for name, pid in list(left.items()):
            if name in still:
                continue
            was = f"still running in pid {pid} when the bot restarted; it then ended:"
            if name in status.applied_checksums:
                state, detail = "done", f"{was} applied"
            elif name in failed:
                why = failed[name].logs or _no_outcome(failed[name])
                state, detail = "failed", f"{was} failed: {why[:300]}"
            else:
                state, detail = "unknown", f"{was} no row in `_prisma_migrations` says how"
            steps.finish(wf.store, run_id, f"migration:{name}", state, detail=detail)
            del left[name]
            run = runs.get(wf.store, run_id)
            if run is not None:
                await wf.reply(run, *messages.followed_up(run_id, name, detail, env.name))
        wf.refresh(run_id)


def _transactional(plan: dict[str, Any], name: str) -> bool:
    return bool(next((m.get("transactional", True) for m in plan.get("migrations", []) if m["name"] == name), True))


def _no_outcome(f: FailedMigration) -> str:
    return ("no outcome recorded (the process applying it stopped)"
            + (f"; {f.progress.describe()}" if f.progress else ""))
