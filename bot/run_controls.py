"""Controls every kind of run shares: votes, the Run/Restore button, typed confirmation, start, abort.

Status changes are compare-and-set (:func:`state.runs.transition`): whatever Slack sends
twice, a run starts once.
"""

from __future__ import annotations

from bot import approval_policy
from bot.actor import Actor, refuse, tell
from bot.render import messages
from bot.run_kinds import KINDS
from bot.run_view import RunView
from bot.workflow import Workflow
from state import approvals, locks, runs


async def vote(wf: Workflow, run_id: int, actor: Actor, decision: str, *, via: str) -> None:
    """Approve or reject, by button or reaction."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in ("awaiting", "scheduled"):
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
        runs.transition(wf.store, run_id, ["awaiting", "scheduled"], "rejected",
                        error=f"rejected by <@{actor.user}>")
        locks.release(wf.store, env.name, run_id)
    wf.refresh(run_id)


async def withdraw(wf: Workflow, run_id: int, actor: Actor, decision: str) -> None:
    """A removed reaction withdraws that person's vote."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] not in ("awaiting", "scheduled"):
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
    """The Run button: typed confirmation where configured, else start."""
    view = await operable(wf, run_id, actor)
    if view is None:
        return
    if view.status == "scheduled":  # it starts at its time; this records the typed confirmation ahead
        from bot import schedules

        await schedules.press_run(wf, view, actor)
        return
    if view.status != "awaiting":
        await refuse(wf, actor, f"run #{run_id} is {view.status}; it cannot start again", run=view.run)
        return
    if not view.ready:
        await refuse(wf, actor, "not ready to run: " + "; ".join(view.missing()), run=view.run)
        return
    word = view.kind.confirm_word(view.env)
    if word:
        if not actor.trigger_id:
            await refuse(wf, actor, "this needs a typed confirmation; press the button again", run=view.run)
            return
        modal = messages.confirm_modal(run_id, view.env.name, describe(view), word)
        if await wf.slack.open_modal(actor.trigger_id, modal) is None:
            await refuse(wf, actor, "Slack did not open the confirmation; press the button again", run=view.run)
        return
    await start(wf, run_id, actor)


def describe(view: RunView) -> str:
    """What the typed confirmation is about, in words."""
    plan = view.plan
    if view.run["kind"] == "migrate":
        return f"apply {len(plan.get('migrations', []))} migration(s)"
    if view.run["kind"] == "rollback":
        return (f"replace the database with backup {plan.get('target')} (data written since then goes into "
                "a safety snapshot)")
    if view.run["kind"] == "undo":
        return f"undo migration {plan.get('migration')} with its inverse SQL"
    return view.kind.title.lower()


def confirmation_error(wf: Workflow, run_id: int, typed: str | None) -> str | None:
    """Check a typed confirmation before the modal closes; None when it is right."""
    run = runs.get(wf.store, run_id)
    if run is None:
        return "this run no longer exists"
    env = wf.config.environment(run["env"])
    word = KINDS[run["kind"]].confirm_word(env)
    if word is None or (typed or "") == word:
        return None
    if word == "RESTORE":
        return "type RESTORE exactly: capital letters, no spaces"
    return f"type the environment name exactly: {word}"


async def start(wf: Workflow, run_id: int, actor: Actor) -> bool:
    """awaiting → running, once (a double click or a retried request starts nothing twice).

    On a scheduled run (its typed confirmation, given ahead) this records the confirmation instead.
    """
    view = await wf.view(run_id)
    if view is not None and view.status == "scheduled":
        from bot import schedules

        await schedules.record_confirmation(wf, run_id, actor)
        return False
    if view is None or not view.ready:
        if view is not None and view.status == "awaiting":
            await refuse(wf, actor, "not ready to run: " + "; ".join(view.missing()), run=view.run)
        return False
    if not runs.transition(wf.store, run_id, ["awaiting"], "running", current_step="starting"):
        return False
    wf.audit(actor.user, "run", run=view.run)
    execute = view.kind.load_executor()
    wf.executing[run_id] = wf.spawn(execute(wf, run_id, actor.user), name=f"run-{run_id}")
    return True


async def abort(wf: Workflow, run_id: int, actor: Actor) -> None:
    view = await operable(wf, run_id, actor)
    if view is None:
        return
    if view.status in ("awaiting", "scheduled"):
        if runs.transition(wf.store, run_id, ["awaiting", "scheduled"], "aborted",
                           error=f"aborted by <@{actor.user}> before it started; nothing was changed"):
            locks.release(wf.store, view.env.name, run_id)
            wf.audit(actor.user, "abort", run=view.run, detail="before start")
            from bot import schedules

            schedules.cancel_for_run(wf, run_id)
        wf.refresh(run_id)
        return
    if view.status == "running" and view.run["kind"] != "migrate":
        await refuse(wf, actor, f"a {view.kind.title.lower()} cannot be stopped half-way; it finishes on its own "
                                "and says what it did", run=view.run)
        return
    if view.status == "running":
        runs.update(wf.store, run_id, abort_requested=1)
        wf.audit(actor.user, "abort", run=view.run, detail="during run")
        if not view.abortable:
            await tell(wf, actor, messages.notice(
                ":hourglass: a migration is being applied right now; the run stops before the next one."))
        wf.refresh(run_id)
        return
    await refuse(wf, actor, f"run #{run_id} already ended ({view.status})", run=view.run)


async def cancel(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The confirmation modal of a restore was cancelled: that rollback ends, nothing done."""
    run = runs.get(wf.store, run_id)
    if run is None or run["kind"] != "rollback":
        return
    if runs.transition(wf.store, run_id, ["awaiting"], "cancelled",
                       error=f"cancelled by <@{actor.user}> at the RESTORE prompt; nothing was changed"):
        locks.release(wf.store, run["env"], run_id)
        wf.audit(actor.user, "cancel", run=run, detail="restore confirmation cancelled")
        wf.refresh(run_id)
