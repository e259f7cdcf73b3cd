"""Terminate a blocking session: the Terminate button of `/db blockers`, from request to result.

The request (:func:`request_terminate`) is a run with the usual lock and approvals; the
button's confirm dialog is the confirmation. Before terminating, the executor looks the
session up again: when it no longer blocks anyone (it finished, or someone ended it) nothing
is terminated and the run says so; when its pid now belongs to another user (pids are reused)
it is refused.

    await request_terminate(wf, wf.env("prod"), 4242, actor)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actions.errors import ActionError
from actions.lock_chains import Session, find_blockers, terminate_backend
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.rules import approval_policy
from bot.runs.controls import start
from bot.runs.open import open_run, post_or_cancel, preparing
from bot.runs.steps import conclude
from bot.workflow import Workflow
from state import locks, runs, steps
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)
STEP = "terminate"


async def current_blocker(wf: Workflow, env: Environment, pid: int, *, patience: float | None = None,
                          poll: float = 0.1) -> tuple[Session, list[int]] | None:
    """Blocker ``pid`` and the pids it blocks, or None when it blocked nobody for ``patience`` seconds.

    A migration that retries with backoff waits for its lock only part of the time, so one look
    can miss that ``pid`` still blocks it: the default patience covers a retry's whole backoff
    while a migration runs on ``env``, a couple of seconds otherwise.
    """
    if patience is None:
        patience = min(env.retry.max_delay + env.lock_timeout + 1, 40.0) if _migrating(wf, env) else 2.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        chains = await find_blockers(env.migration_url, timeout=env.connect_timeout)
        blocked = [c.waiting.pid for c in chains for b in c.blockers if b.pid == pid]
        session = next((b for c in chains for b in c.blockers if b.pid == pid), None)
        if session is not None:
            return session, blocked
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(poll)


def _migrating(wf: Workflow, env: Environment) -> bool:
    return any(r["kind"] == "migrate" and r["status"] == RunStatus.RUNNING for r in runs.open_runs(wf.store, env.name))


async def request_terminate(wf: Workflow, env: Environment, pid: int, actor: Actor) -> int | None:
    """The Terminate button: a run of kind ``terminate`` with the usual lock and approvals.

    The button's confirm dialog is the confirmation; where no approval is needed the run
    starts at once, otherwise it waits for approvals and its Run button.
    """
    reason = approval_policy.may_request(env, actor.user)
    if reason:
        await refuse(wf, actor, reason, env=env.name)
        return None
    try:
        found = await current_blocker(wf, env, pid)
    except (ActionError, TimeoutError) as exc:
        await refuse(wf, actor, f"cannot check pid {pid} on {env.name}: {exc or 'timed out'}", env=env.name)
        return None
    if found is None:
        await tell(wf, actor, messages.no_longer_blocks(env.name, pid))
        return None
    session, blocked = found
    plan: dict[str, Any] = {
        "pid": pid, "user": session.user, "application": session.application, "state": session.state,
        "query": session.query, "db": session.database, "xact_age": session.xact_age, "blocks": blocked}
    holder = locks.holder_of(wf.store, env.name)
    other = runs.get(wf.store, holder["run_id"]) if holder else None
    # the runbook's "Migration Hangs": ending what blocks a running migration is the remedy,
    # so that migration's lock does not stand in the way (approvals still do)
    bypass = bool(other and other["status"] == RunStatus.RUNNING and other["kind"] == "migrate")
    if bypass and holder:
        plan["notes"] = [f":information_source: {env.name} is locked by running migration run "
                         f"#{holder['run_id']}; this terminate does not wait for that lock."]
    run_id = await open_run(wf, env, actor, "terminate", plan=plan, lock=not bypass)
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        if not await post_or_cancel(wf, run_id, env, actor, f"terminate pid {pid} (user {session.user})"):
            return None
        view = await wf.view(run_id)
        if view is not None and view.ready:
            await start(wf, run_id, actor)
        return run_id
    return None


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    plan = run.get("plan") or {}
    pid = int(plan["pid"])
    steps.start(wf.store, run_id, STEP, f"Terminate pid {pid}", position=0)
    wf.refresh(run_id)
    status, summary = RunStatus.FAILED, ""
    try:
        found = await current_blocker(wf, env, pid)
        if found is None:
            status, summary = RunStatus.CANCELLED, (f"pid {pid} no longer blocks anyone: the session is gone or "
                                                    "finished its transaction, so nothing was terminated")
        elif found[0].user != plan.get("user"):
            status, summary = RunStatus.CANCELLED, (f"pid {pid} now belongs to user {found[0].user}, not "
                                                    f"{plan.get('user')}: a different session, so nothing was "
                                                    "terminated; list the blockers again")
        elif await terminate_backend(env.migration_url, pid, timeout=env.connect_timeout):
            freed = ", ".join(str(p) for p in found[1]) or "none"
            status, summary = RunStatus.SUCCEEDED, (f"pid {pid} (user {plan.get('user')}) was terminated: its "
                                                    f"transaction was rolled back. Sessions it blocked: {freed}")
        else:
            summary = f"pid {pid} was signalled but is still there after {env.connect_timeout:g}s; try again"
    except ActionError as exc:
        gone = "no session with pid" in str(exc)
        status, summary = (RunStatus.CANCELLED if gone else RunStatus.FAILED), (
            f"pid {pid} is gone already: nothing was terminated" if gone else str(exc))
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("terminate run %s crashed", run_id)
        summary = f"internal error: {exc}"
    finally:
        step_status = {RunStatus.SUCCEEDED: "done", RunStatus.CANCELLED: "skipped"}.get(status, "failed")
        steps.finish(wf.store, run_id, STEP, step_status, detail=summary)
        succeeded = status is RunStatus.SUCCEEDED
        conclude(wf, run_id, user, status=status, result={"summary": summary} if succeeded else {},
                 error=None if succeeded else summary, action=f"terminate_{status}")


async def explain_interrupted(wf: Workflow, run: Run, env: Environment) -> tuple[list[str], str]:
    return ["its result is unknown"], "Check by hand before asking again."
