"""`/rollback` and the incident's "Roll back to backup" (filled in by the rollback issue)."""

from __future__ import annotations

from typing import Any

from bot.workflow import Workflow


async def from_incident(wf: Workflow, run_id: int, actor: Any) -> None:
    from bot.actor import refuse

    await refuse(wf, actor, "rollback from Slack is not available yet; use `migrabot restore`")
