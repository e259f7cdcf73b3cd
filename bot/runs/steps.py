"""Steps of an executing run: written to state before and after they happen, shown live.

    async with step(wf, run_id, "backup", "Backup (pg_dump)", 1) as note:
        info = await take_backup(...)
        note["detail"] = f"{info.id}, verified"

An :class:`~actions.errors.ActionError` inside marks the step failed and becomes
:class:`StepFailed`, which the executor turns into a failed run with that sentence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from actions.backup import BackupProgress, take_backup
from actions.errors import ActionError
from bot.config import Environment
from bot.render import messages
from bot.workflow import Workflow
from state import runs, steps
from state.runs import RunStatus


class StepFailed(Exception):
    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


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


async def backup_first(wf: Workflow, run_id: int, env: Environment, user: str, position: int, reason: str) -> str:
    """A verified backup before any schema change (shared by every executor that changes the schema)."""
    async with step(wf, run_id, "backup", "Backup (pg_dump)", position) as note:
        def progress(p: BackupProgress) -> None:
            steps.note(wf.store, run_id, "backup", messages.backup_progress(p.bytes_written, p.elapsed))
            wf.refresh(run_id)

        try:
            info = await take_backup(env.migration_url, env.backup_dir, env.name, reason=reason, requested_by=user,
                                     jobs=env.backup_jobs, free_margin=env.backup_free_margin, on_progress=progress)
        except ActionError as exc:
            raise StepFailed(f"backup failed, so nothing was changed: {exc}") from None
        if not info.verified:
            raise StepFailed(f"backup {info.id} did not verify, so nothing was changed")
        runs.update(wf.store, run_id, backup_id=info.id)
        note["detail"] = messages.backup_done(info.id, info.size_bytes)
    return info.id


def settle_step(wf: Workflow, run_id: int, name: str, status: str, detail: str) -> None:
    """Close a step left open (after a restart) with what the database server says happened."""
    existing = {s["name"]: s for s in steps.steps(wf.store, run_id)}
    if name in existing and existing[name]["status"] in ("pending", "running"):
        steps.finish(wf.store, run_id, name, status, detail=detail)
