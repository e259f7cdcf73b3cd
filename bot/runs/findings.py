"""What the checklist's checks found that belongs in the run's thread, and the rehearsal a run is measured by.

    run = note_rehearsal(wf, run_id, env) or run      # plan["rehearsal"]: the latest rehearsal, fresh or stale
    await post_findings(wf, run, env, checks, found)  # the drift differences, when that item did not pass
"""

from __future__ import annotations

from typing import Any

from actions.drift_memory import fingerprint
from bot.config import Environment
from bot.render import drift as drift_render
from bot.rules.checks import rehearsal_status
from bot.workflow import Workflow
from state import runs
from state.runs import Run


def note_rehearsal(wf: Workflow, run_id: int, env: Environment) -> Run | None:
    """Store the latest rehearsal of ``env``, measured against this run's migrations, in the run's plan.

    The run message shows it (fresh or stale) and the checklist's "Rehearsal" and "Rollback plan"
    items read it. Returns the updated run.
    """
    run = runs.get(wf.store, run_id)
    if run is None or run["kind"] != "migrate":
        return run
    status = rehearsal_status(env, run["plan"])
    if status != run["plan"].get("rehearsal"):
        runs.update(wf.store, run_id, plan={**run["plan"], "rehearsal": status})
        run = runs.get(wf.store, run_id)
    return run


async def post_findings(wf: Workflow, run: Run, env: Environment, checks: dict[str, dict[str, str]],
                        found: dict[str, Any]) -> None:
    """The drift differences in the thread when "Schema matches the migrations" did not pass."""
    report = found.get("drift")
    if report is None or checks.get("drift", {}).get("status") == "pass":
        return
    # each set of differences once: a run's checks run again (its request, Re-check) on the same findings
    seen = fingerprint(report)
    fresh = runs.get(wf.store, run["id"]) or run
    if fresh["plan"].get("drift_posted") == seen:
        return
    runs.update(wf.store, run["id"], plan={**fresh["plan"], "drift_posted": seen})
    await wf.reply(run, *drift_render.checklist_failure(report, blocking=env.drift_action == "block"))
