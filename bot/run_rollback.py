"""The executor of a rollback: restore the chosen backup (safety snapshot, restore, verify, swap, verify)."""

from __future__ import annotations

import logging
from typing import Any

from actions.db import database_name
from actions.errors import ActionError
from bot.render import blocks as bk
from bot.run_steps import conclude
from bot.workflow import Workflow
from state import runs, steps

log = logging.getLogger(__name__)
LABELS = {"verify backup": "Verify the chosen backup", "safety snapshot": "Safety snapshot of the current data",
          "restore": "Restore into a new database", "verify restored database": "Verify the restored database",
          "swap": "Swap databases", "verify connectivity": "Verify connectivity",
          "empty database": "Empty the database (in place)", "restore safety snapshot": "Put the snapshot back"}
BEFORE_SWAP = {"verify backup", "safety snapshot", "restore", "verify restored database"}


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    from actions.restore import restore

    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    target = run["plan"]["target"]
    order: list[str] = []
    failed_step: list[str] = []

    async def on_step(s: Any) -> None:
        if s.name not in order:
            order.append(s.name)
        position = order.index(s.name)
        label = LABELS.get(s.name, s.name)
        if s.status == "started":
            steps.start(wf.store, run_id, s.name, label, position=position)
            runs.update(wf.store, run_id, current_step=s.name)
        else:
            if s.status == "skipped":
                steps.plan(wf.store, run_id, s.name, label, position=position)
            if s.status == "failed":
                failed_step.append(s.name)
            steps.finish(wf.store, run_id, s.name, s.status, detail=s.detail)
        wf.refresh(run_id)

    try:
        result = await restore(env.migration_url, env.backup_dir, env.name, target, confirm="RESTORE",
                               pgbouncer_admin_url=env.pgbouncer_admin_url,
                               pgbouncer_database=database_name(env.database_url), requested_by=user,
                               jobs=env.backup_jobs, on_step=on_step)
    except ActionError as exc:
        where = failed_step[-1] if failed_step else "verify backup"
        if where in BEFORE_SWAP:
            state = "the original database is untouched"
        elif where == "swap":
            state = "the swap did not complete; the sentence above says in which state it left the databases"
        else:
            state = f"the restore finished but {where} failed; check the database now"
        conclude(wf, run_id, user, status="failed", result={"target": target},
                 error=f"restore of `{target}` failed at {LABELS.get(where, where)}: {exc}. {state.capitalize()}.")
        return
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("rollback run %s crashed", run_id)
        conclude(wf, run_id, user, status="failed", result={"target": target}, error=f"internal error: {exc}")
        return
    data = result.to_dict()
    data["summary"] = (f"restored backup `{result.backup_id}` in {bk.duration(result.duration)}; "
                       f"safety snapshot `{result.snapshot_id}` holds the data from before; the previous database "
                       f"is kept as `{result.previous_database}`; connections were refused for "
                       f"{bk.duration(result.unavailable_seconds)}")
    runs.update(wf.store, run_id, backup_id=result.snapshot_id)
    conclude(wf, run_id, user, status="succeeded", result=data)
