"""Steps of an executing run: written to state before and after they happen, shown live.

    async with step(wf, run_id, "backup", "Backup (pg_dump)", 1) as note:
        info = await take_backup(...)
        note["detail"] = f"{info.id}, verified"

An :class:`~actions.errors.ActionError` inside marks the step failed and becomes
:class:`StepFailed`, which the executor turns into a failed run with that sentence.
:class:`StateRecorder` hands the same steps to the procedures of ``actions/procedure.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from actions.errors import ActionError
from actions.procedure import StepFailed, verified_backup
from bot.config import Environment
from bot.workflow import Workflow
from state import runs, steps
from state.runs import RunStatus

__all__ = ["StateRecorder", "StepFailed", "backup_first", "conclude", "settle_step", "skip_rest", "step"]


@asynccontextmanager
async def step(wf: Workflow, run_id: int, name: str, label: str, position: int) -> AsyncIterator[dict[str, str]]:
    note = {"detail": ""}
    steps.start(wf.store, run_id, name, label, position=position)
    runs.update(wf.store, run_id, current_step=name)
    wf.refresh(run_id)
    try:
        yield note
    except ActionError as exc:
        steps.finish(wf.store, run_id, name, "failed", detail=str(exc))
        wf.refresh(run_id)
        raise StepFailed(str(exc)) from None
    except StepFailed as exc:
        steps.finish(wf.store, run_id, name, "failed", detail=note["detail"] or str(exc))
        wf.refresh(run_id)
        raise
    steps.finish(wf.store, run_id, name, "done", detail=note["detail"])
    wf.refresh(run_id)


def skip_rest(wf: Workflow, run_id: int, status: str = "skipped") -> None:
    """Close every step that never ran (after a failure or an abort)."""
    for s in steps.steps(wf.store, run_id):
        if s["status"] in ("pending", "running"):
            steps.finish(wf.store, run_id, s["name"], status)


def conclude(wf: Workflow, run_id: int, user: str, *, status: RunStatus, result: dict[str, Any],
             error: str | None = None, action: str | None = None) -> None:
    """End an executing run: final status (which frees the environment), audit, message refreshed."""
    run = runs.get(wf.store, run_id)
    if status is not RunStatus.SUCCEEDED:
        skip_rest(wf, run_id, "aborted" if status is RunStatus.ABORTED else "skipped")
    fields: dict[str, Any] = {"result": result, "error": error, "current_step": str(status)}
    runs.transition(wf.store, run_id, status, only_from=[RunStatus.RUNNING], **fields)
    wf.audit(user, action or str(status), run=run, detail=error or result.get("summary", ""))
    wf.executing.pop(run_id, None)
    wf.refresh(run_id)
    wf.spawn(wf.note_delays(run_id), f"delay-note-{run_id}")  # the closing note: 429s seen and retried


class StateRecorder:
    """A procedure's steps written to the run's state and shown live in its message."""

    def __init__(self, wf: Workflow, run_id: int) -> None:
        self.wf, self.run_id = wf, run_id

    def plan(self, planned: list[tuple[str, str]]) -> None:
        for position, (name, label) in enumerate(planned):
            steps.plan(self.wf.store, self.run_id, name, label, position=position)
        self.wf.refresh(self.run_id)

    def step(self, name: str, label: str, position: int) -> AbstractAsyncContextManager[dict[str, str]]:
        return step(self.wf, self.run_id, name, label, position)

    def start(self, name: str, label: str, position: int) -> None:
        steps.start(self.wf.store, self.run_id, name, label, position=position)
        runs.update(self.wf.store, self.run_id, current_step=name)
        self.wf.refresh(self.run_id)

    def finish(self, name: str, status: str, detail: str = "") -> None:
        steps.finish(self.wf.store, self.run_id, name, status, detail=detail)
        self.wf.refresh(self.run_id)

    def note(self, name: str, detail: str) -> None:
        steps.note(self.wf.store, self.run_id, name, detail)
        self.wf.refresh(self.run_id)


async def backup_first(wf: Workflow, run_id: int, env: Environment, user: str, position: int, reason: str) -> str:
    """A verified backup before any schema change (shared by every executor that changes the schema)."""
    backup_id = await verified_backup(env, StateRecorder(wf, run_id), position, reason=reason, requested_by=user)
    runs.update(wf.store, run_id, backup_id=backup_id)
    return backup_id


def settle_step(wf: Workflow, run_id: int, name: str, status: str, detail: str) -> None:
    """Close a step left open (after a restart) with what the database server says happened."""
    existing = {s["name"]: s for s in steps.steps(wf.store, run_id)}
    if name in existing and existing[name]["status"] in ("pending", "running"):
        steps.finish(wf.store, run_id, name, status, detail=detail)
