"""`/rollback`: parse, answer bad input at once, hand over to the rollback flow."""

from __future__ import annotations

from typing import Any

from bot import rollback_flow
from bot.commands import ROLLBACK_USAGE, UsageError, environments_hint, parse
from bot.render import messages
from bot.workflow import Workflow
from handlers.common import actor_from_command, answer_usage, first_time


def register(app: Any, wf: Workflow) -> None:
    @app.command("/rollback")
    async def rollback_command(ack: Any, command: dict[str, Any]) -> None:
        try:
            cmd = parse("/rollback", command.get("text", ""), wf.config)
        except UsageError as exc:
            await answer_usage(ack, ROLLBACK_USAGE + f"\nEnvironments: {environments_hint(wf.config)}", str(exc))
            return
        if cmd.action == "help":
            text, blocks = messages.usage(ROLLBACK_USAGE)
            await ack(response_type="ephemeral", text=text, blocks=blocks)
            return
        if first_time(wf, "command", command.get("trigger_id", "")):
            actor, env = actor_from_command(command), wf.env(cmd.env)
            work = rollback_flow.request_undo if cmd.action == "undo_last" else rollback_flow.request_restore
            wf.spawn(work(wf, env, actor), f"rollback-{cmd.action}")
        await ack()
