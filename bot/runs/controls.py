"""Controls every kind of run shares: votes, the Run/Restore button, typed confirmation, start, abort.

Status changes are compare-and-set (:func:`state.runs.transition`): whatever Slack sends
twice, a run starts once, and a run that ends frees its environment with it.

A scheduled run's Run button ("Confirm now") records the typed confirmation ahead of its
time instead of starting it (nobody types at 3 a.m.); :mod:`bot.runs.scheduled` starts it.
"""

from __future__ import annotations

from actions.errors import ActionError
from actions.restore import sessions_on
from bot import scheduler
from bot.actor import Actor, refuse, tell
from bot.render import messages
from bot.rules import approval_policy
from bot.rules.confirmation import confirm_word, confirmation_error
from bot.rules.kinds import KINDS
from bot.rules.run_view import RunView, chosen_backup
from bot.workflow import Workflow
from state import approvals, runs, schedules
from state.runs import RunStatus
from state.store import now_iso


async def vote(wf: Workflow, run_id: int, actor: Actor, decision: str, *, via: str) -> None:
    """Approve or reject, by button or reaction."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in runs.WAITING:
        if via == "button":
            await refuse(wf, actor, "this run is no longer waiting for approvals", run=run)
        return
    env = wf.env(run["env"])
    members = await wf.members(env)
    reason = approval_policy.may_vote(env, requested_by=run["requested_by"], user=actor.user, members=members)
    if reason:
        await refuse(wf, actor, f"your {decision} was not counted: {reason}", run=run, action=f"{decision}_refused")
        return
    if not approvals.vote(wf.store, run_id, actor.user, decision, via=via):
        return  # the same vote again (a double click, or button then reaction): counted once
    wf.audit(actor.user, decision, run=run, detail=f"via {via}")
    if decision == "reject":
        runs.transition(wf.store, run_id, RunStatus.REJECTED, error=f"rejected by <@{actor.user}>")
        _unschedule(wf, run_id)
    wf.refresh(run_id)


async def withdraw(wf: Workflow, run_id: int, actor: Actor, decision: str) -> None:
    """A removed reaction withdraws that person's vote."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in runs.WAITING:
        return
    if approvals.withdraw(wf.store, run_id, actor.user, decision):
        wf.audit(actor.user, f"withdraw_{decision}", run=run, detail="reaction removed")
        wf.refresh(run_id)


async def operable(wf: Workflow, run_id: int, actor: Actor) -> RunView | None:
    """The run, if it exists and ``actor`` may operate it; else a refusal and None."""
    view = await wf.view(run_id)
    if view is None:
        await refuse(wf, actor, f"run #{run_id} does not exist")
        return None
    reason = approval_policy.may_operate(view.env, actor.user, requested_by=view.run["requested_by"],
                                members=await wf.members(view.env))
    if reason:
        await refuse(wf, actor, reason, run=view.run)
        return None
    return view


async def press_run(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The Run button: typed confirmation where the kind or environment asks for one, else start."""
    view = await operable(wf, run_id, actor)
    if view is None:
        return
    word = view.requirements.typed_word
    if view.status is RunStatus.SCHEDULED:  # it starts at its time; this records the typed confirmation ahead
        if not word:
            await tell(wf, actor, messages.starts_by_itself(view))
            return
        await _open_confirmation(wf, view, actor, word)
        return
    if view.status is not RunStatus.AWAITING:
        await refuse(wf, actor, f"run #{run_id} is {view.status}; it cannot start again", run=view.run)
        return
    if not view.ready:
        await refuse(wf, actor, "not ready to run: " + "; ".join(view.missing()), run=view.run)
        return
    if word:
        await _open_confirmation(wf, view, actor, word)
        return
    await start(wf, run_id, actor)


async def _open_confirmation(wf: Workflow, view: RunView, actor: Actor, word: str) -> None:
    if not actor.trigger_id:
        await refuse(wf, actor, "this needs a typed confirmation; press the button again", run=view.run)
        return
    notes = []
    if view.kind.ends_sessions:  # said before the swap, not discovered after it
        try:
            sessions = await sessions_on(view.env.migration_url, timeout=min(2.0, view.env.connect_timeout))
            notes.append(messages.sessions_note(sessions.describe()))
        except (ActionError, TimeoutError) as exc:
            notes.append(messages.sessions_note(None, str(exc)))
    chosen = chosen_backup(view.plan)
    if chosen.get("origin"):
        notes.append(messages.other_origin_note(chosen["origin"], view.env.name))
    if await wf.slack.open_modal(actor.trigger_id, messages.confirm_modal(view, word, notes)) is None:
        await refuse(wf, actor, "Slack did not open the confirmation; press the button again", run=view.run)


def check_typed(wf: Workflow, run_id: int, typed: str | None) -> str | None:
    """Check a typed confirmation before the modal closes; None when it is right."""
    run = runs.get(wf.store, run_id)
    if run is None:
        return "this run no longer exists"
    return confirmation_error(KINDS[run["kind"]], wf.config.environment(run["env"]), typed)


async def start(wf: Workflow, run_id: int, actor: Actor) -> bool:
    """awaiting → running, once (a double click or a retried request starts nothing twice).

    On a scheduled run (its typed confirmation, given ahead) this records the confirmation instead.
    """
    view = await wf.view(run_id)
    if view is not None and view.status is RunStatus.SCHEDULED:
        record_confirmation(wf, view, actor)
        return False
    if view is None or not view.ready:
        if view is not None and view.status is RunStatus.AWAITING:
            await refuse(wf, actor, "not ready to run: " + "; ".join(view.missing()), run=view.run)
        return False
    if not runs.transition(wf.store, run_id, RunStatus.RUNNING, current_step="starting"):
        return False
    wf.audit(actor.user, "run", run=view.run)
    wf.execute(view.run["kind"], run_id, actor.user)
    return True


def record_confirmation(wf: Workflow, view: RunView, actor: Actor) -> None:
    """The typed confirmation of a scheduled run was right: remember it for the start."""
    plan = dict(view.plan)
    plan["confirmed"] = {"by": actor.user, "at": now_iso()}
    runs.update(wf.store, view.id, plan=plan)
    wf.audit(actor.user, "confirm_scheduled", run=view.run)
    wf.refresh(view.id)


async def abort(wf: Workflow, run_id: int, actor: Actor) -> None:
    view = await operable(wf, run_id, actor)
    if view is None:
        return
    if view.status in runs.WAITING:
        if runs.transition(wf.store, run_id, RunStatus.ABORTED,
                           error=f"aborted by <@{actor.user}> before it started; nothing was changed"):
            wf.audit(actor.user, "abort", run=view.run, detail="before start")
            _unschedule(wf, run_id)
        wf.refresh(run_id)
        return
    if view.status is RunStatus.RUNNING and not view.kind.stops_between_steps:
        await refuse(wf, actor, f"a {view.kind.title.lower()} cannot be stopped half-way; it finishes on its own "
                                "and says what it did", run=view.run)
        return
    if view.status is RunStatus.RUNNING:
        runs.update(wf.store, run_id, abort_requested=1)
        wf.audit(actor.user, "abort", run=view.run, detail="during run")
        if not view.abortable:
            await tell(wf, actor, messages.abort_at_next_safe_point())
        wf.refresh(run_id)
        return
    await refuse(wf, actor, f"run #{run_id} already ended ({view.status})", run=view.run)


async def dismiss(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The typed-confirmation modal was closed: a kind whose prompt is its last word (a restore) ends."""
    run = runs.get(wf.store, run_id)
    if run is None or not KINDS[run["kind"]].dismiss_cancels:
        return
    word = confirm_word(KINDS[run["kind"]], wf.config.environment(run["env"]))
    if runs.transition(wf.store, run_id, RunStatus.CANCELLED, only_from=[RunStatus.AWAITING],
                       error=f"cancelled by <@{actor.user}> at the {word} prompt; nothing was changed"):
        wf.audit(actor.user, "cancel", run=run, detail="typed confirmation cancelled")
        wf.refresh(run_id)


def _unschedule(wf: Workflow, run_id: int) -> None:
    """A run that ended before its time takes its scheduled start with it."""
    for schedule_id in schedules.cancel_for_run(wf.store, run_id, "cancelled before its time"):
        scheduler.remove_job(wf, scheduler.run_start_job_id(schedule_id))
