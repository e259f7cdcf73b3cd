"""The kinds table: what each kind of run needs before it may start, and how it may be stopped.

    >>> KINDS["rollback"].needs_target, KINDS["migrate"].stops_between_steps
    (True, True)

A kind's request and executor live in ``bot/runs/<kind>.py``; ``bot/runs/registry.py``
maps each name here to that module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.config import Environment


class Approvals(StrEnum):
    POLICY = "policy"  # the environment's required_approvals
    ONE = "one"  # at most one, whatever the environment asks (a resolve)


class Typed(StrEnum):
    ENV = "env"  # the environment's name, where the environment sets confirm_by_typing
    RESTORE = "restore"  # always the runbook's RESTORE (see bot.rules.confirmation)
    NONE = "none"


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    run_label: str
    checklist: bool = False  # the runbook's pre-migration checklist must be complete
    approvals: Approvals = Approvals.POLICY
    typed: Typed = Typed.ENV
    needs_target: bool = False  # a backup must be chosen before it can run
    stops_between_steps: bool = False  # Abort while running stops it at the next safe point
    dismiss_cancels: bool = False  # closing its typed-confirmation modal ends the run
    incident_on_failure: bool = False  # a failure opens an incident: roll back, mark rolled back, fix forward
    ends_sessions: bool = False  # it replaces the database: its confirmation says whom it disconnects

    def needed_approvals(self, env: Environment) -> int:
        return min(1, env.required_approvals) if self.approvals is Approvals.ONE else env.required_approvals


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("migrate", "Migration", ":rocket: Run", checklist=True, stops_between_steps=True, incident_on_failure=True),
    Kind("rollback", "Rollback (restore a backup)", ":rewind: Restore…", typed=Typed.RESTORE, needs_target=True,
         dismiss_cancels=True, ends_sessions=True),
    Kind("undo", "Partial rollback (undo the last migration)", ":leftwards_arrow_with_hook: Undo"),
    Kind("resolve", "Resolve a migration", ":wrench: Resolve", approvals=Approvals.ONE, typed=Typed.NONE),
    Kind("terminate", "Terminate a blocking session", ":skull: Terminate", typed=Typed.NONE),
)}
