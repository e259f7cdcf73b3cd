"""`/migrate resolve` and the incident's "Mark rolled back" (filled in by the rollback issue)."""

from __future__ import annotations

from typing import Any

from bot.config import Environment
from bot.workflow import Workflow


async def request_resolve(wf: Workflow, env: Environment, actor: Any, migration: str, as_: str) -> None:
    from bot.actor import refuse

    await refuse(wf, actor, "resolve from Slack is not available yet; use `migrabot resolve`", env=env.name)


async def from_incident(wf: Workflow, run_id: int, actor: Any) -> None:
    from bot.actor import refuse

    await refuse(wf, actor, "resolve from Slack is not available yet; use `migrabot resolve`")
