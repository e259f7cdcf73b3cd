"""`/rollback`: restore a chosen backup, or undo the last migration."""

from __future__ import annotations

from typing import Any

from bot.runs import rollback, undo
from bot.workflow import Workflow
from handlers.common import Work, register_slash

RUNNERS: dict[str, Work] = {
    "restore": lambda wf, cmd, actor: rollback.request_restore(wf, wf.env(cmd.env), actor),
    "undo_last": lambda wf, cmd, actor: undo.request_undo(wf, wf.env(cmd.env), actor),
}


def register(app: Any, wf: Workflow) -> None:
    register_slash(app, wf, "/rollback", RUNNERS)
