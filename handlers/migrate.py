"""`/migrate`: parse, answer bad input at once, hand every real request to the workflow."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from bot import migrate_flow as flow
from bot import resolve_flow, schedules
from bot.actor import Actor
from bot.commands import MIGRATE_USAGE, Command, UsageError, environments_hint, parse
from bot.workflow import Workflow
from handlers.common import actor_from_command, answer_usage, first_time

Work = Callable[[Workflow, Command, Actor], Coroutine[Any, Any, Any]]

# One runner per command, as in Atlantis: the parser decides the action, this table who does it.
RUNNERS: dict[str, Work] = {
    "help": lambda wf, cmd, actor: flow.show_help(wf, actor),
    "run": lambda wf, cmd, actor: flow.request_run(wf, wf.env(cmd.env), actor),
    "plan": lambda wf, cmd, actor: flow.show_plan(wf, wf.env(cmd.env), actor),
    "status": lambda wf, cmd, actor: flow.show_status(wf, wf.env(cmd.env), actor),
    "history": lambda wf, cmd, actor: flow.show_history(wf, wf.env(cmd.env), actor),
    "abort": lambda wf, cmd, actor: flow.abort_env(wf, wf.env(cmd.env), actor),
    "resolve": lambda wf, cmd, actor: resolve_flow.request_resolve(
        wf, wf.env(cmd.env), actor, cmd.args["migration"], cmd.args["as"]),
    "schedule_run": lambda wf, cmd, actor: schedules.schedule_run(wf, wf.env(cmd.env), actor, cmd.args["at"]),
    "schedule": lambda wf, cmd, actor: schedules.list_scheduled(wf, actor),
}


def register(app: Any, wf: Workflow) -> None:
    @app.command("/migrate")
    async def migrate_command(ack: Any, command: dict[str, Any]) -> None:
        try:
            cmd = parse("/migrate", command.get("text", ""), wf.config)
        except UsageError as exc:
            await answer_usage(ack, MIGRATE_USAGE + f"\nEnvironments: {environments_hint(wf.config)}", str(exc))
            return
        if first_time(wf, "command", command.get("trigger_id", "")):
            # spawned before the ack, so the work is already tracked when Slack hears back
            wf.spawn(RUNNERS[cmd.action](wf, cmd, actor_from_command(command)), f"migrate-{cmd.action}")
        await ack()
