"""Who acted, and how to answer them (ephemeral) and refuse them (ephemeral and audited)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.render import messages
from bot.workflow import Workflow
from state.runs import Run


@dataclass
class Actor:
    """Who acted, and where (for ephemeral answers)."""

    user: str
    channel: str
    channel_name: str | None = None
    trigger_id: str | None = None
    response_url: str | None = None


async def tell(wf: Workflow, actor: Actor, text_blocks: tuple[str, list[dict[str, Any]]]) -> None:
    """An answer only ``actor`` sees; through the request's response_url when the bot cannot
    post in that channel (a private channel or DM it is not a member of)."""
    text, blocks = text_blocks
    if await wf.slack.ephemeral(actor.channel, actor.user, text, blocks):
        return
    if actor.response_url:
        await wf.slack.respond(actor.response_url, text, blocks)


async def answer_once(wf: Workflow, actor: Actor, text_blocks: tuple[str, list[dict[str, Any]]]) -> None:
    """One answer only ``actor`` sees where the bot may not be a member: the request's response_url
    (it works in any conversation), else an ephemeral message; never a second, doomed call."""
    text, blocks = text_blocks
    if actor.response_url:
        await wf.slack.respond(actor.response_url, text, blocks)
    else:
        await wf.slack.ephemeral(actor.channel, actor.user, text, blocks)


async def refuse(wf: Workflow, actor: Actor, reason: str, *, run: Run | None = None,
                 env: str | None = None, action: str = "refused") -> None:
    wf.audit(actor.user, action, run=run, env=env, detail=reason)
    await tell(wf, actor, messages.refusal(reason))
