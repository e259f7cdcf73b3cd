"""The executor of `/migrate resolve`: Prisma's `migrate resolve --applied | --rolled-back`."""

from __future__ import annotations

import logging

from bot.run_steps import StepFailed, conclude, step
from bot.workflow import Workflow
from state import runs

log = logging.getLogger(__name__)


async def execute(wf: Workflow, run_id: int, user: str) -> None:
    from actions.resolve import resolve_applied, resolve_rolled_back

    run = runs.get(wf.store, run_id)
    assert run is not None
    env = wf.env(run["env"])
    name, as_ = run["plan"]["migration"], run["plan"]["as"]
    try:
        async with step(wf, run_id, "resolve", f"Mark `{name}` {as_}", 0) as note:
            resolve = resolve_applied if as_ == "applied" else resolve_rolled_back
            note["detail"] = await resolve(env.migration_url, env.migrations_dir, name,
                                           advisory_lock_timeout=env.advisory_lock_timeout)
        conclude(wf, run_id, user, status="succeeded", result={"summary": note["detail"]})
    except StepFailed as exc:
        conclude(wf, run_id, user, status="failed", result={}, error=str(exc))
    except Exception as exc:
        log.exception("resolve run %s crashed", run_id)
        conclude(wf, run_id, user, status="failed", result={}, error=f"internal error: {exc}")
