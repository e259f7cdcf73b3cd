"""After a restart, or when the replica executing a run went silent: explain, never re-run.

A run that was executing when its process stopped is never re-run blindly. Its kind's
``explain_interrupted`` reads what the servers say (``_prisma_migrations`` rows and the
advisory lock for a migration or an undo; which databases exist for a restore) and the run
message is updated with what actually happened; people decide what comes next. Environment
locks whose run is no longer open (state written before a run's end and its lock were one
transaction) are freed.

Only the leader replica does this (:mod:`bot.app`). With SQLite state there is one process, so
at its start every ``running`` run it does not execute itself was interrupted (``older_than``
None). With PostgreSQL state other replicas may be executing runs: a run is examined only when
its owner's heartbeat is older than the lease (:func:`examine_stale`, every heartbeat). Before
examining, the leader claims the run (compare-and-set on the heartbeat), so two replicas that
both believe they lead for a moment never both explain it.
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
RESTARTED = "the bot restarted while this run was executing"


async def recover(wf: Workflow, *, older_than: str | None = None) -> list[int]:
    """Re-render open runs; examine and close the ones that were executing. Returns their ids.

    ``older_than`` (ISO time): only runs whose owner's heartbeat is older are examined (other
    replicas may be alive); None: every running run this process does not execute itself.
    """
    for row in locks.release_orphaned(wf.store, tuple(str(s) for s in runs.OPEN)):
        wf.audit("bot", "release_stale_lock", env=row["env"], detail=f"run {row['run_id']} had ended")
    # retries and double submits come within seconds; a week of keys is plenty
    dedup.forget_older_than(wf.store, (datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="milliseconds"))
    examined = await examine_stale(wf, older_than=older_than)
    for run in runs.open_runs(wf.store):
        if run["id"] not in examined:
            wf.refresh(run["id"])
    return examined


async def examine_stale(wf: Workflow, *, older_than: str | None) -> list[int]:
    """Examine and close the running runs whose owner is gone; returns their ids."""
    candidates = (runs.stale_running(wf.store, older_than) if older_than is not None else
                  [r for r in runs.open_runs(wf.store) if r["status"] == RunStatus.RUNNING])
    examined = []
    for run in candidates:
        if run["id"] in wf.executing or not runs.claim(wf.store, run["id"], older_than=older_than):
            continue  # ours, or another replica claimed it (or its owner just said it is alive)
        lost = (RESTARTED if older_than is None else
                f"the replica executing this run ({run.get('owner') or 'unknown'}) stopped answering")
        try:
            await examine_interrupted(wf, run, lost=lost)
        except Exception:
            log.exception("cannot examine interrupted run %s", run["id"])
            _close(wf, run, f"{lost} and it could not be examined (see the log of {wf.store.replica}); "
                            "nothing was re-run: check the database before acting")
        examined.append(run["id"])
        wf.refresh(run["id"])
    return examined


async def examine_interrupted(wf: Workflow, run: Run, *, lost: str = RESTARTED) -> None:
    env = wf.env(run["env"])
    facts, advice = await EXPLAINERS[run["kind"]](wf, run, env)
    backup = f" Backup `{run['backup_id']}` was taken before." if run.get("backup_id") else ""
    _close(wf, run, f"{lost}; nothing was re-run. What the database "
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
