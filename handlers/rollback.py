"""`/rollback` (filled in by the rollback issue)."""

from __future__ import annotations

from typing import Any

from bot.commands import ROLLBACK_USAGE
from bot.workflow import Workflow
from handlers.common import answer_usage


def register(app: Any, wf: Workflow) -> None:
    @app.command("/rollback")
    async def rollback_command(ack: Any, command: dict[str, Any]) -> None:
        await answer_usage(ack, ROLLBACK_USAGE, "`/rollback` is not available yet")
