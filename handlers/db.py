"""`/db` (filled in by the monitoring issue)."""

from __future__ import annotations

from typing import Any

from bot.commands import DB_USAGE
from bot.workflow import Workflow
from handlers.common import answer_usage


def register(app: Any, wf: Workflow) -> None:
    @app.command("/db")
    async def db_command(ack: Any, command: dict[str, Any]) -> None:
        await answer_usage(ack, DB_USAGE, "`/db` is not available yet")
