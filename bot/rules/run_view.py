"""A run as people see it: read from state in one place, with what still stands before Run.

``ready`` and ``missing()`` are the rule that decides whether a run may start: target
chosen, checklist complete, approvals met (:mod:`bot.rules.approval_policy`, :mod:`bot.rules.checklist`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.config import Environment
from bot.rules import checklist
from bot.rules.approval_policy import ApprovalState, evaluate
from bot.rules.kinds import KINDS, Kind
from bot.rules.policy import Requirements, requirements
from state import approvals, runs, steps, ticks
from state.runs import Run, RunStatus
from state.store import Store


def chosen_backup(plan: dict[str, Any]) -> dict[str, Any]:
    """The backup a restore's plan has chosen, as its menu offered it (empty before a choice).

    >>> chosen_backup({"target": "b2", "backups": [{"id": "b1"}, {"id": "b2", "origin": None}]})
    {'id': 'b2', 'origin': None}
    """
    found: dict[str, Any] = next((c for c in plan.get("backups", []) if c["id"] == plan.get("target")), {})
    return found


@dataclass
class RunView:
    run: Run
    env: Environment
    ticks: dict[str, dict[str, Any]]
    approval: ApprovalState
    steps: list[dict[str, Any]]
    now: datetime

    @property
    def id(self) -> int:
        return int(self.run["id"])

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.run["status"])

    @property
    def plan(self) -> dict[str, Any]:
        return self.run.get("plan") or {}

    @property
    def checks(self) -> dict[str, dict[str, str]]:
        return self.run.get("checks") or {}

    @property
    def kind(self) -> Kind:
        return KINDS[self.run["kind"]]

    @property
    def requirements(self) -> Requirements:
        """What this kind of run needs on this environment (the one policy, bot/rules/policy.py)."""
        return requirements(self.env, self.kind)

    @property
    def checklist_done(self) -> bool:
        if not self.kind.checklist:
            return True
        done, total = checklist.summary(self.checks, self.ticks)
        return done == total

    @property
    def target_chosen(self) -> bool:
        """A rollback needs a chosen backup; the other kinds know their target from the start."""
        return not self.kind.needs_target or bool(self.plan.get("target"))

    @property
    def ready(self) -> bool:
        """Run may start: target chosen, checklist complete and approvals met."""
        return self.status is RunStatus.AWAITING and self.target_chosen and self.checklist_done and self.approval.met

    @property
    def abortable(self) -> bool:
        """Until the first migration starts, and between migrations."""
        if self.status in runs.WAITING:
            return True
        if self.status is not RunStatus.RUNNING or not self.kind.stops_between_steps:
            return False  # a restore, undo or resolve is not stopped half-way
        return not any(s["status"] == "running" and s["name"].startswith("migration:") for s in self.steps)

    def missing(self) -> list[str]:
        """What still stands between this run and the Run button, in words."""
        out = []
        if not self.target_chosen:
            out.append("choose a backup")
        for item in (checklist.items_for(self.checks) if self.kind.checklist else ()):
            if not checklist.is_done(item.key, self.checks, self.ticks):
                state = self.checks.get(item.key, {}).get("status", "pending")
                why = {"fail": "failed", "manual": "not ticked"}.get(state, "checking")
                out.append(f"{item.label} ({why})")
        if self.approval.count < self.approval.needed:
            out.append(f"approvals {self.approval.count}/{self.approval.needed}")
        return out


    def missing_at_scheduled_start(self) -> list[str]:
        """What stops a scheduled run at its time: the usual, and a typed confirmation not recorded ahead."""
        out = self.missing()
        if self.requirements.typed_word and not self.plan.get("confirmed"):
            out.append("typed confirmation (record it beforehand with Confirm now)")
        return out


def load_run_view(store: Store, env: Environment, run_id: int, members: set[str],
                  now: datetime | None = None) -> RunView | None:
    run = runs.get(store, run_id)
    if run is None:
        return None
    now = now or datetime.now(UTC)
    approval = evaluate(env, requested_by=run["requested_by"], votes=approvals.live(store, run_id),
                        members=members, now=now, needed=requirements(env, KINDS[run["kind"]]).approvals)
    return RunView(run=run, env=env, ticks=ticks.ticks(store, run_id), approval=approval,
                   steps=steps.steps(store, run_id), now=now)
