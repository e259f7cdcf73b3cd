"""Scheduled runs (`/migrate ENV at TIME`, `/migrate ENV in DURATION`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.config import Environment
from bot.workflow import Workflow


def cancel_for_run(wf: Workflow, run_id: int) -> None:
    """Cancel the scheduled start of ``run_id`` (if any)."""
    with wf.store.lock:
        wf.store.db.execute("UPDATE schedules SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'",
                            [run_id])


async def schedule_run(wf: Workflow, env: Environment, actor: Any, at: datetime) -> None:
    from bot.actor import refuse

    await refuse(wf, actor, "scheduled runs are not available yet", env=env.name)


async def list_scheduled(wf: Workflow, actor: Any) -> None:
    from bot.actor import refuse

    await refuse(wf, actor, "scheduled runs are not available yet")
