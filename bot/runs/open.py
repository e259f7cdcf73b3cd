"""Opening a run: authorise, take the environment's lock, and always let go of it again.

    run_id = await open_run(wf, env, actor, "rollback")
    if run_id is None:
        return                       # refused, and the person was told why
    async with preparing(wf, run_id, env, actor):
        ...                          # plan, post the message; any error frees the lock and says so

Between taking the lock and posting the run message nobody can see the run, so a failure
there must not leave the environment locked by a run nobody can abort.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages
from bot.rules import approval_policy
from bot.workflow import Workflow
from state import locks, runs
from state.runs import RunStatus

log = logging.getLogger(__name__)


async def open_run(wf: Workflow, env: Environment, actor: Actor, kind: str, *,
                   status: RunStatus = RunStatus.AWAITING,
                   plan: dict[str, Any] | None = None, lock: bool = True) -> int | None:
    """Create a run of ``kind`` holding ``env``'s lock; None (after a refusal) when not allowed or locked."""
    reason = approval_policy.may_request(env, actor.user)
    if reason:
        await refuse(wf, actor, reason, env=env.name)
        return None
    run_id = runs.create(wf.store, kind=kind, env=env.name, requested_by=actor.user, channel=actor.channel,
                         status=status, plan=plan)
    if not lock:
        return run_id
    holder = locks.acquire(wf.store, env.name, run_id=run_id, holder=actor.user)
    if holder is not None:
        runs.delete(wf.store, run_id)
        await refuse_locked(wf, actor, env.name, holder)
        return None
    return run_id


async def refuse_locked(wf: Workflow, actor: Actor, env_name: str, holder: dict[str, Any]) -> None:
    """Tell the person who holds the environment, since when, with a link to that run."""
    other = runs.get(wf.store, holder["run_id"])
    link = None
    if other and other["message_ts"]:
        link = await wf.slack.permalink(other["channel"], other["message_ts"])
    wf.audit(actor.user, "refused_locked", env=env_name, detail=f"held by {holder['holder']} run {holder['run_id']}")
    await tell(wf, actor, messages.lock_held(env_name, holder, link))


def end_unstarted(wf: Workflow, run_id: int, status: RunStatus, **fields: Any) -> bool:
    """End a run that never started (its lock goes with it); False when it had moved on."""
    return runs.transition(wf.store, run_id, status, only_from=runs.WAITING, **fields)


@asynccontextmanager
async def preparing(wf: Workflow, run_id: int, env: Environment, actor: Actor) -> AsyncIterator[None]:
    """Any unexpected error while a run is being prepared ends it, frees the lock and tells the person."""
    try:
        yield
    except Exception as exc:
        log.exception("preparing run %s on %s failed", run_id, env.name)
        end_unstarted(wf, run_id, RunStatus.CANCELLED, error=f"internal error while preparing: {exc}")
        await refuse(wf, actor, f"something went wrong while preparing the run on {env.name}, so nothing was "
                                f"started and the environment is free again ({type(exc).__name__}: {exc}); "
                                "the bot's log has the details", env=env.name)


async def post_or_cancel(wf: Workflow, run_id: int, env: Environment, actor: Actor, detail: str) -> bool:
    """Post the run message (audited); when Slack refuses it, end the run and say so."""
    wf.audit(actor.user, "request", run=runs.get(wf.store, run_id), detail=detail)
    if await wf.post_run_message(run_id) is None:
        end_unstarted(wf, run_id, RunStatus.CANCELLED, error="Slack refused the run message")
        await refuse(wf, actor, "Slack refused the run message, so nothing was started (see the bot's log)",
                     env=env.name)
        return False
    return True
