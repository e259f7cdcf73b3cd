"""`/migrate`: one runner per action, as in Atlantis: the parser decides the action, this table who does it."""

from __future__ import annotations

from typing import Any

from bot.runs import migrate, rehearse, resolve, scheduled
from bot.workflow import Workflow
from handlers.common import Work, register_slash

RUNNERS: dict[str, Work] = {
    "run": lambda wf, cmd, actor: migrate.request_run(wf, wf.env(cmd.env), actor),
    "plan": lambda wf, cmd, actor: migrate.show_plan(wf, wf.env(cmd.env), actor),
    "status": lambda wf, cmd, actor: migrate.show_status(wf, wf.env(cmd.env), actor),
    "history": lambda wf, cmd, actor: migrate.show_history(wf, wf.env(cmd.env), actor),
    "rehearse": lambda wf, cmd, actor: rehearse.rehearse_env(wf, wf.env(cmd.env), actor),
    "abort": lambda wf, cmd, actor: migrate.abort_env(wf, wf.env(cmd.env), actor),
    "resolve": lambda wf, cmd, actor: resolve.request_resolve(
        wf, wf.env(cmd.env), actor, cmd.args["migration"], cmd.args["as"]),
    "schedule_run": lambda wf, cmd, actor: scheduled.schedule_run(wf, wf.env(cmd.env), actor, cmd.args["at"]),
    "schedule": lambda wf, cmd, actor: scheduled.list_scheduled(wf, actor),
}


def register(app: Any, wf: Workflow) -> None:
    register_slash(app, wf, "/migrate", RUNNERS)
