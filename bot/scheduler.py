"""The APScheduler scheduler that starts with the app."""

from __future__ import annotations

from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.workflow import Workflow


async def start(wf: Workflow) -> Any:
    scheduler = AsyncIOScheduler(timezone=wf.config.timezone)
    scheduler.start()
    wf.scheduler = scheduler  # type: ignore[attr-defined]
    return scheduler
