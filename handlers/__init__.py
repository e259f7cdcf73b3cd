"""Slack listeners only: parse, authorise, ``ack()`` fast, hand over to the workflow.

Each module has ``register(app, wf)``; :func:`register_all` wires every one of them.
"""

from __future__ import annotations

from typing import Any

from bot.workflow import Workflow
from handlers import db, migrate, reactions, rollback, run_buttons, views


def register_all(app: Any, wf: Workflow) -> None:
    for module in (migrate, rollback, db, run_buttons, reactions, views):
        module.register(app, wf)
