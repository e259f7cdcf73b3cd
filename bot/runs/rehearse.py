"""`/migrate rehearse ENV` and the Rehearse button: the pending migrations applied to a restored copy.

Not a kind of run: it neither locks the environment nor changes it (the live database is only
read; ``actions/rehearsal.py`` restores a backup into a scratch database and drops it). It runs
in the background and can take minutes, so the thread hears when it starts; the result goes to
the thread of the environment's open `/migrate` run (or under a message of its own), and that run's
message and checklist learn of it at once (fresh rehearsal, "Rehearsal" item, "Rollback plan" line).

    await rehearse_env(wf, wf.env("staging"), actor)          # /migrate rehearse staging
    await rehearse_for_run(wf, run_id, actor)                 # the Rehearse button
"""

from __future__ import annotations

import logging

from actions.errors import ActionError
from actions.rehearsal import rehearse_environment
from bot.actor import Actor, refuse
from bot.config import Environment
from bot.render import rehearsal as render
from bot.rules.checks import rehearsal_item, rollback_plan_item
from bot.runs.controls import operable
from bot.runs.findings import note_rehearsal
from bot.workflow import Workflow
from state import runs
from state.runs import Run

log = logging.getLogger(__name__)

_RUNNING: set[tuple[int, str]] = set()  # (workflow, environment): one rehearsal at a time per environment


def _open_migrate_run(wf: Workflow, env: Environment) -> Run | None:
    found = [r for r in runs.open_runs(wf.store, env.name) if r["kind"] == "migrate" and r["status"] in runs.WAITING]
    return found[-1] if found else None


async def rehearse_env(wf: Workflow, env: Environment, actor: Actor) -> None:
    """`/migrate rehearse ENV`: in the open run's thread when there is one, else under a message of its own."""
    await _rehearse(wf, env, actor, _open_migrate_run(wf, env))


async def rehearse_for_run(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The Rehearse button of a run message (people who may operate the run may rehearse it)."""
    view = await operable(wf, run_id, actor)
    if view is None:
        return
    if view.status not in runs.WAITING:
        await refuse(wf, actor, "this run is no longer waiting: rehearse with `/migrate rehearse "
                                f"{view.env.name}`", run=view.run)
        return
    await _rehearse(wf, view.env, actor, view.run)


async def _rehearse(wf: Workflow, env: Environment, actor: Actor, run: Run | None) -> None:
    key = (id(wf), env.name)
    if key in _RUNNING:
        await refuse(wf, actor, f"a rehearsal of {env.name} is already running; its result comes to the thread",
                     env=env.name)
        return
    _RUNNING.add(key)
    try:
        pending = len(run["plan"].get("migrations", [])) if run else None
        started = render.rehearsal_started(env.name, pending, by=actor.user)
        if run is not None and run.get("message_ts"):
            channel, thread = run["channel"], run["message_ts"]
            await wf.slack.post(channel, *started, thread_ts=thread)
        else:
            channel = env.channel or actor.channel
            thread = await wf.slack.post(channel, *started)
            if thread is None:
                await refuse(wf, actor, "Slack refused the rehearsal message (is the bot in this channel? "
                                        "`/invite` it)", env=env.name)
                return
        wf.audit(actor.user, "rehearse", run=run, env=env.name)
        try:
            result = await rehearse_environment(env)
        except ActionError as exc:
            wf.audit(actor.user, "rehearse_failed", run=run, env=env.name, detail=str(exc))
            await wf.slack.post(channel, *render.rehearsal_refused(env.name, str(exc)), thread_ts=thread)
            return
        wf.audit(actor.user, "rehearsed", run=run, env=env.name,
                 detail="passed" if result.ok else f"failed: {result.failed.verdict if result.failed else '?'}")
        # a failure is broadcast to the channel: people see it before anyone touches the environment
        await wf.slack.post(channel, *render.rehearsal_result(result), thread_ts=thread,
                            broadcast=not result.ok and run is not None)
    finally:
        _RUNNING.discard(key)
    for open_run in runs.open_runs(wf.store, env.name):
        if open_run["kind"] == "migrate" and open_run["status"] in runs.WAITING:
            _learn(wf, open_run["id"], env)


def _learn(wf: Workflow, run_id: int, env: Environment) -> None:
    """The run's plan and its rehearsal items, from the rehearsal just kept."""
    run = note_rehearsal(wf, run_id, env)
    if run is None or not run.get("checks"):
        wf.refresh(run_id)
        return
    checks = {**run["checks"], "rollback_plan": rollback_plan_item(run["plan"])}
    if env.require_rehearsal:
        checks["rehearsal"] = rehearsal_item(run["plan"].get("rehearsal"))
    runs.update(wf.store, run_id, checks=checks)
    wf.refresh(run_id)
