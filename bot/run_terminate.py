"""The executor of a terminate run: end one blocking session with ``pg_terminate_backend``.

Before terminating, the session is looked up again: when it no longer blocks anyone (it
finished, or someone ended it) nothing is terminated and the run says so; when its pid now
belongs to another user (pids are reused) it is refused. Started by
:func:`bot.run_controls.start` like every kind of run.
"""

from __future__ import annotations

import logging

from actions.errors import ActionError
from bot.workflow import Workflow
from state import locks, runs, steps

log = logging.getLogger(__name__)
STEP = "terminate"


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    from actions.lock_chains import terminate_backend
    from bot.db_flow import current_blocker

    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    plan = run.get("plan") or {}
    pid = int(plan["pid"])
    steps.start(wf.store, run_id, STEP, f"Terminate pid {pid}", position=0)
    wf.refresh(run_id)
    status, summary = "failed", ""
    try:
        found = await current_blocker(wf, env, pid)
        if found is None:
            status, summary = "cancelled", (f"pid {pid} no longer blocks anyone: the session is gone or finished its "
                                            "transaction, so nothing was terminated")
        elif found[0].user != plan.get("user"):
            status, summary = "cancelled", (f"pid {pid} now belongs to user {found[0].user}, not "
                                            f"{plan.get('user')}: a different session, so nothing was terminated; "
                                            f"list the blockers again")
        elif await terminate_backend(env.migration_url, pid, timeout=env.connect_timeout):
            freed = ", ".join(str(p) for p in found[1]) or "none"
            status, summary = "succeeded", (f"pid {pid} (user {plan.get('user')}) was terminated: its transaction "
                                            f"was rolled back. Sessions it blocked: {freed}")
        else:
            summary = f"pid {pid} was signalled but is still there after {env.connect_timeout:g}s; try again"
    except ActionError as exc:
        gone = "no session with pid" in str(exc)
        status, summary = ("cancelled" if gone else "failed"), (
            f"pid {pid} is gone already: nothing was terminated" if gone else str(exc))
    except Exception as exc:  # a bug must still leave an explained, unlocked run
        log.exception("terminate run %s crashed", run_id)
        summary = f"internal error: {exc}"
    finally:
        step_status = {"succeeded": "done", "cancelled": "skipped"}.get(status, "failed")
        steps.finish(wf.store, run_id, STEP, step_status, detail=summary)
        fields = {"result": {"summary": summary}} if status == "succeeded" else {"error": summary}
        runs.transition(wf.store, run_id, ["running"], status, current_step="done", **fields)
        wf.audit(user, f"terminate_{status}", run=run, detail=summary)
        locks.release(wf.store, env.name, run_id)
        wf.executing.pop(run_id, None)
        wf.refresh(run_id)
