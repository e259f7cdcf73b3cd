"""Calling the progress callbacks that callers (the CLI, the Slack workflow) pass to actions.

    await call_safely(on_progress, BackupProgress(...), "backup progress")

The callback may be sync or async; whatever it raises is logged and ignored, so a Slack
hiccup in a progress update can never break a backup, a migration or a restore.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


async def call_safely(callback: Callable[[Any], Any] | None, value: Any, what: str) -> None:
    if callback is None:
        return
    try:
        result = callback(value)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("the %s callback failed (ignored)", what)
