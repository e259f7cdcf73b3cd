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

from bot.actor import Actor, answer_once, refuse, tell
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
    # runs of an environment with a channel live there (by name or id until the post answers the id)
    run_id = runs.create(wf.store, kind=kind, env=env.name, requested_by=actor.user,
                         channel=env.channel or actor.channel, status=status, plan=plan)
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
    """Post the run message (audited); when Slack refuses it, end the run and say so in one answer.

    Then learn where it went (:func:`learn_venue`) and, when that is not where the command was
    typed, tell the person with a link.
    """
    wf.audit(actor.user, "request", run=runs.get(wf.store, run_id), detail=detail)
    posted = await wf.post_run_message(run_id)
    if posted.ts is None or posted.channel is None:
        end_unstarted(wf, run_id, RunStatus.CANCELLED, error="Slack refused the run message")
        if posted.error in NOT_A_MEMBER:
            wf.audit(actor.user, "refused", env=env.name, detail=f"bot not in the channel ({posted.error})")
            where = env.channel or ""
            await answer_once(wf, actor, messages.not_in_channel(where, posted.error or ""))
        else:
            await refuse(wf, actor, f"Slack refused the run message ({posted.error}), so nothing was started "
                                    "(see the bot's log)", env=env.name)
        return False
    await learn_venue(wf, run_id, actor, posted.channel)
    if posted.channel != actor.channel:
        link = await wf.slack.permalink(posted.channel, posted.ts)
        await tell(wf, actor, messages.run_posted_in(posted.channel, link))
    return True


#: What ``chat.postMessage`` answers where the bot is not a member (public channel without
#: chat:write.public: not_in_channel; private channel or DM: channel_not_found).
#: https://api.slack.com/methods/chat.postMessage#errors
NOT_A_MEMBER = ("not_in_channel", "channel_not_found")


async def learn_venue(wf: Workflow, run_id: int, actor: Actor, channel: str) -> dict[str, Any]:
    """Ask Slack what the conversation is (``conversations.info``; a command's ``channel_name`` says
    ``directmessage``/``privategroup``, not who is there) and store it in the run's plan as ``venue``.

    Reactions reach the bot only from conversations it is a member of, so it joins a public
    channel it posted in with chat:write.public (``conversations.join``, scope channels:join);
    when it cannot, the thread says approvals by reaction will not count there.
    """
    info = await wf.slack.conversation(channel)
    venue = venue_of(info)
    if info is not None and not info.get("is_member") and venue["kind"] == "public":
        if await wf.slack.join(channel):
            venue["member"] = True
        else:
            venue["member"] = False
            run = runs.get(wf.store, run_id)
            if run is not None:
                await wf.reply(run, *messages.reactions_will_not_count(channel, wf.slack.last_error))
    run = runs.get(wf.store, run_id)
    if run is not None:
        runs.update(wf.store, run_id, plan={**(run.get("plan") or {}), "venue": venue})
    return venue


def venue_of(info: dict[str, Any] | None) -> dict[str, Any]:
    """What ``conversations.info`` said, reduced to what the checklist needs.

    ``others``: members besides the requester and the bot (``num_members`` counts both).

    >>> venue_of({"is_im": True})["kind"]
    'im'
    >>> venue_of({"is_channel": True, "name": "deploys", "num_members": 5, "is_member": True})["others"]
    3
    """
    if not info:
        return {"kind": "unknown", "name": "", "others": 0, "member": False}
    if info.get("is_im"):
        kind = "im"
    elif info.get("is_mpim"):
        kind = "mpim"
    elif info.get("is_private") or info.get("is_group"):
        kind = "private"
    else:
        kind = "public"
    members = int(info.get("num_members") or 0)
    others = 0 if kind == "im" else max(0, members - 1 - (1 if info.get("is_member") else 0))
    return {"kind": kind, "name": "" if kind in ("im", "mpim") else str(info.get("name") or ""),
            "others": others, "member": bool(info.get("is_member"))}


def new_input_version(wf: Workflow, run_id: int) -> None:
    """Give the run message's inputs (checkboxes, backup menu) new block_ids at the next render.

    Slack's clients keep a person's own selection for an input whose block_id did not change, so
    when the bot puts the boxes back (a refused or merged click) the block_id must change
    ("If a message is updated, use a new block_id": https://api.slack.com/reference/block-kit/blocks).
    """
    run = runs.get(wf.store, run_id)
    if run is not None:
        plan = run.get("plan") or {}
        runs.update(wf.store, run_id, plan={**plan, "input_version": int(plan.get("input_version") or 0) + 1})
