"""After a restart: reload open runs, and explain the ones that were executing.

A run that was executing when the bot stopped is never re-run blindly. Its kind's
``explain_interrupted`` reads what the servers say (``_prisma_migrations`` rows and the
advisory lock for a migration or an undo; which databases exist for a restore) and the run
message is updated with what actually happened; people decide what comes next. Environment
locks whose run is no longer open (state written before a run's end and its lock were one
transaction) are freed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from bot.render import messages
from bot.runs.registry import EXPLAINERS
from bot.runs.steps import skip_rest
from bot.workflow import Workflow
from state import dedup, locks, runs, steps
from state.runs import Run, RunStatus

log = logging.getLogger(__name__)


async def recover(wf: Workflow) -> list[int]:
    """Re-render open runs; examine and close the ones that were executing. Returns their ids."""
    for row in locks.release_orphaned(wf.store, tuple(str(s) for s in runs.OPEN)):
        wf.audit("bot", "release_stale_lock", env=row["env"], detail=f"run {row['run_id']} had ended")
    # retries and double submits come within seconds; a week of keys is plenty
    dedup.forget_older_than(wf.store, (datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="milliseconds"))
    examined = []
    for run in runs.open_runs(wf.store):
        if run["status"] == RunStatus.RUNNING and run["id"] not in wf.executing:
            try:
                await examine_interrupted(wf, run)
            except Exception:
                log.exception("cannot examine interrupted run %s", run["id"])
                _close(wf, run, "the bot restarted while this run was executing and could not examine it "
                                "(see its log); nothing was re-run: check the database before acting")
            examined.append(run["id"])
        wf.refresh(run["id"])
    return examined


async def examine_interrupted(wf: Workflow, run: Run) -> None:
    env = wf.env(run["env"])
    facts, advice = await EXPLAINERS[run["kind"]](wf, run, env)
    backup = f" Backup `{run['backup_id']}` was taken before." if run.get("backup_id") else ""
    _close(wf, run, "the bot restarted while this run was executing; nothing was re-run. What the database "
                    "server shows: " + "; ".join(facts) + "." + backup + " " + advice)


def _close(wf: Workflow, run: Run, error: str) -> None:
    for s in steps.steps(wf.store, run["id"]):
        if s["status"] == "running":
            steps.finish(wf.store, run["id"], s["name"], "unknown")
    skip_rest(wf, run["id"])
    applied = (run.get("result") or {}).get("applied", [])
    runs.transition(wf.store, run["id"], RunStatus.INTERRUPTED, error=error,
                    result={**(run.get("result") or {}), "applied": applied, "backup_id": run.get("backup_id")})
    wf.audit("bot", "interrupted", run=run, detail=error)
    wf.spawn(wf.reply(run, *messages.interrupted(run["id"], error)), "interrupted")
