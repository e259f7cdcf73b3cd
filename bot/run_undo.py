"""The executor of a partial rollback: backup, then the last migration's inverse SQL and its row removed."""

from __future__ import annotations

import logging
from typing import Any

from bot.render import blocks as bk
from bot.run_steps import StepFailed, backup_first, conclude, step
from bot.workflow import Workflow
from state import runs, steps

log = logging.getLogger(__name__)


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    from actions.partial_rollback import undo_last
    from actions.status import migration_status

    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    name = run["plan"]["migration"]
    steps.plan(wf.store, run_id, "backup", "Backup (pg_dump)", position=0)
    steps.plan(wf.store, run_id, "undo", f"Undo `{name}`", position=1)
    steps.plan(wf.store, run_id, "status", "Migration status", position=2)
    result: dict[str, Any] = {"migration": name}
    try:
        result["backup_id"] = await backup_first(wf, run_id, env, user, 0, f"before undo of {name} (run {run_id})")
        async with step(wf, run_id, "undo", f"Undo `{name}`", 1) as note:
            def on_event(event: Any) -> None:
                if event.kind == "retrying":
                    who = ", ".join(f"pid {b.pid}" for b in event.blockers) or "another session"
                    steps.note(wf.store, run_id, "undo", f"lock timeout, retry {event.attempt} (blocked by {who})")
                    wf.refresh(run_id)

            undone = await undo_last(env.migration_url, env.migrations_dir, expected_migration=name,
                                     lock_timeout=env.lock_timeout, statement_timeout=env.statement_timeout,
                                     retry=env.retry, advisory_lock_timeout=env.advisory_lock_timeout,
                                     on_event=on_event, connect_timeout=env.connect_timeout,
                                     expected_sha256=run["plan"].get("down_sha256"))
            if not undone.ok:
                result["logs"] = undone.logs
                note["detail"] = f"failed: {(undone.logs or '')[:300]}"
                if run["plan"].get("transactional", True):
                    raise StepFailed(f"the inverse SQL of `{name}` failed and was rolled back, so nothing changed: "
                                     f"{undone.logs or ''}")
                reached = f" at {undone.statement}" if undone.statement else ""
                raise StepFailed(f"the inverse SQL of `{name}` runs outside a transaction and failed{reached}: the "
                                 f"statements before it stay applied, and `{name}` is still recorded as applied. "
                                 f"Finish or undo them by hand. {undone.logs or ''}")
            note["detail"] = f"inverse SQL ran and the row was removed ({bk.duration(undone.duration)})"
        async with step(wf, run_id, "status", "Migration status", 2) as note:
            status = await migration_status(env.migration_url, env.migrations_dir)
            if name not in status.pending:
                note["detail"] = f"`{name}` is NOT pending"
                raise StepFailed(f"the inverse SQL ran but `{name}` is not pending afterwards; check "
                                 f"`/migrate status {env.name}`")
            note["detail"] = f"`{name}` is pending again"
        result["summary"] = (f"`{name}` was undone; it is pending again. Backup `{result['backup_id']}` "
                             "was taken first.")
        conclude(wf, run_id, user, status="succeeded", result=result)
    except StepFailed as exc:
        conclude(wf, run_id, user, status="failed", result=result, error=str(exc))
    except Exception as exc:
        log.exception("undo run %s crashed", run_id)
        conclude(wf, run_id, user, status="failed", result=result, error=f"internal error: {exc}")
