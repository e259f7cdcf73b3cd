"""What differs between the kinds of run: migrate, rollback (restore), undo (partial rollback), resolve, terminate.

    >>> KINDS["rollback"].confirm_word(None)
    'RESTORE'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bot.config import Environment


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    run_label: str
    checklist: bool
    executor: str  # "module:function", imported when a run starts
    approvals: str = "policy"  # "policy": the environment's required_approvals; "one": at most one
    typed: str = "env"  # "env": the environment name where confirm_by_typing; "RESTORE": always; "none"

    def needed_approvals(self, env: Environment) -> int:
        return min(1, env.required_approvals) if self.approvals == "one" else env.required_approvals

    def confirm_word(self, env: Environment | None) -> str | None:
        if self.typed == "RESTORE":
            return "RESTORE"
        if self.typed == "env" and env is not None and env.confirm_by_typing:
            return env.name
        return None

    def load_executor(self) -> Callable[..., Coroutine[Any, Any, Any]]:
        module, _, func = self.executor.partition(":")
        return getattr(importlib.import_module(module), func)


KINDS = {
    "migrate": Kind("migrate", "Migration", ":rocket: Run", True, "bot.run_migrate:execute"),
    "rollback": Kind("rollback", "Rollback (restore a backup)", ":rewind: Restore…", False,
                     "bot.run_rollback:execute", typed="RESTORE"),
    "undo": Kind("undo", "Partial rollback (undo the last migration)", ":leftwards_arrow_with_hook: Undo", False,
                 "bot.run_undo:execute"),
    "resolve": Kind("resolve", "Resolve a migration", ":wrench: Resolve", False, "bot.run_resolve:execute",
                    approvals="one", typed="none"),
    "terminate": Kind("terminate", "Terminate a blocking session", ":skull: Terminate", False,
                      "bot.run_terminate:execute", typed="none"),
}
