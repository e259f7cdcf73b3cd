"""Scheduled runs: `/migrate ENV at TIME|in DURATION`, `/migrate schedule`, and the start at that time.

    await schedule_run(wf, wf.env("prod"), actor, at)   # run message now, start at ``at``
    await fire_run(wf, "run-42")                        # what the job does at ``at`` (callable in tests)

The run is requested at once (lock, checklist, approvals: the usual run message, status
``scheduled``); a row in ``schedules`` and an APScheduler job start it at its time, and
the row survives a restart (:func:`restore_run_starts` re-creates the job).

At its time a run starts only when it is ready: checklist complete and approvals met
(approvals expire after ``approval_expiry``, so they must be recent enough at the start).
Otherwise the bot says in the thread what is missing and the run stays open (``awaiting``)
for people to finish it and press Run, or to abort it; nothing runs by itself late.

A typed confirmation cannot be typed by nobody at 3 a.m.: on a scheduled run that needs one
(production), the Run button ("Confirm now") opens the usual typed confirmation and
*records* it instead of starting (:mod:`bot.runs.controls`); a run whose confirmation was
not recorded does not start. Abort on a scheduled run cancels the schedule.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from actions.humanize import duration
from bot import scheduler
from bot.actor import Actor, tell
from bot.config import Environment
from bot.render import messages, reports
from bot.render.dates import when_text
from bot.rules.confirmation import confirm_word
from bot.rules.kinds import KINDS
from bot.runs.controls import start
from bot.runs.migrate import request_run
from bot.runs.open import end_unstarted
from bot.workflow import Workflow
from state import runs, schedules
from state.runs import RunStatus

log = logging.getLogger(__name__)
MISSED_GRACE = 15 * 60.0  # seconds: a start at most this late still happens after a restart


# --- requesting and listing -------------------------------------------------------------------------


async def schedule_run(wf: Workflow, env: Environment, actor: Actor, at: datetime) -> int | None:
    """`/migrate ENV at TIME`: request the run now (status ``scheduled``) and start it at ``at``."""
    iso = at.isoformat(timespec="seconds")
    run_id = await request_run(wf, env, actor, scheduled_for=iso)
    if run_id is None:
        return None  # refused, locked or nothing pending: the person was told why
    schedule_id = schedules.add_run_start(wf.store, run_id=run_id, env=env.name, run_at=iso, created_by=actor.user)
    wf.audit(actor.user, "schedule", run=runs.get(wf.store, run_id), detail=f"start at {iso}")
    _add_job(wf, schedule_id, at)
    return run_id


def _add_job(wf: Workflow, schedule_id: str, at: datetime) -> None:
    async def fire() -> None:  # a coroutine, so it runs on the loop and hands over to wf (tracked by settle)
        wf.spawn(fire_run(wf, schedule_id), f"fire-{schedule_id}")

    scheduler.add_date_job(wf, scheduler.run_start_job_id(schedule_id), at, fire)


async def list_scheduled(wf: Workflow, actor: Actor) -> None:
    """`/migrate schedule`: pending scheduled runs and the recurring jobs, to the person only."""
    listed = []
    for row in schedules.pending_run_starts(wf.store):
        run = runs.get(wf.store, row["run_id"])
        env = wf.config.environment(row["env"])
        kind = KINDS.get(run["kind"] if run else "migrate")
        needs_word = bool(env is not None and kind is not None and confirm_word(kind, env))
        confirmed = (run["plan"] if run else {}).get("confirmed")
        listed.append({"run_id": row["run_id"], "env": row["env"], "at": when_text(row["run_at"]),
                       "by": row["created_by"], "note": messages.schedule_note(needs_word, confirmed)})
    await tell(wf, actor, reports.schedule_list(listed, scheduler.recurring_jobs(wf.config)))


# --- at the time -------------------------------------------------------------------------------------


async def fire_run(wf: Workflow, schedule_id: str) -> str:
    """Start the scheduled run if it is ready; returns the schedule's new status.

    scheduled → awaiting, then :func:`bot.runs.controls.start` (awaiting → running, once).
    """
    row = schedules.get(wf.store, schedule_id)
    if row is None or row["status"] != "pending":
        return row["status"] if row else "missing"
    run = runs.get(wf.store, row["run_id"])
    if run is not None and run["status"] in (RunStatus.AWAITING, RunStatus.RUNNING):
        return "firing"  # another firing of this start (a new leader's, a retried job) moved it first
    if run is None or run["status"] != RunStatus.SCHEDULED:
        status = run["status"] if run else "gone"
        schedules.finish(wf.store, schedule_id, "cancelled", f"the run is {status}")
        return "cancelled"
    if not runs.transition(wf.store, run["id"], RunStatus.AWAITING):
        now = schedules.get(wf.store, schedule_id)
        return now["status"] if now else "missing"
    view = await wf.view(run["id"])
    assert view is not None
    missing = view.missing_at_scheduled_start()
    if missing:
        detail = "; ".join(missing)
        schedules.finish(wf.store, schedule_id, "blocked", detail)
        wf.audit("scheduler", "scheduled_start_blocked", run=run, detail=detail)
        await wf.reply(run, *messages.scheduled_start_blocked(run["id"], detail), broadcast=True)
        wf.refresh(run["id"])
        return "blocked"
    schedules.finish(wf.store, schedule_id, "fired", "started")
    confirmed = view.plan.get("confirmed") or {}
    actor = Actor(user=confirmed.get("by") or run["requested_by"], channel=run["channel"])
    wf.audit("scheduler", "scheduled_start", run=run, detail=f"scheduled for {row['run_at']}")
    await wf.reply(run, *messages.scheduled_start(run["id"]))
    if not await start(wf, run["id"], actor):
        wf.refresh(run["id"])
    return "fired"


async def expire_missed(wf: Workflow, schedule_id: str, late_by: float) -> None:
    """The bot was down well past the start: do not run late, close the run and say so."""
    row = schedules.get(wf.store, schedule_id)
    if row is None or not schedules.finish(wf.store, schedule_id, "missed",
                                           f"bot was down; {duration(late_by)} late"):
        return
    reason = messages.missed_start_reason(row["run_at"], late_by)
    end_unstarted(wf, row["run_id"], RunStatus.EXPIRED, error=reason)
    run = runs.get(wf.store, row["run_id"])
    if run:
        wf.audit("scheduler", "scheduled_start_missed", run=run, detail=reason)
        await wf.reply(run, *messages.run_expired(run["id"], reason))
        wf.refresh(run["id"])


async def restore_run_starts(wf: Workflow, *, grace: float = MISSED_GRACE, now: datetime | None = None) -> None:
    """Re-create the jobs of pending run starts after a restart; handle the ones that came due meanwhile."""
    now = now or datetime.now(UTC)
    for row in schedules.pending_run_starts(wf.store):
        at = datetime.fromisoformat(row["run_at"])
        late = (now - at).total_seconds()
        if late > grace:
            await expire_missed(wf, row["id"], late)
        elif late >= 0:
            wf.spawn(fire_run(wf, row["id"]), f"fire-{row['id']}")
        else:
            _add_job(wf, row["id"], at)


async def sync_run_starts(wf: Workflow, *, grace: float = MISSED_GRACE, now: datetime | None = None) -> int:
    """On the leader, every heartbeat: give its scheduler the run starts another replica scheduled.

    A `/migrate ENV at TIME` that reached a follower is only a ``pending`` row (a follower runs
    no scheduler); this makes its job here. Starts that already have a job, or are firing in
    this process, are left alone. Returns how many were picked up.
    """
    sched = wf.scheduler
    if sched is None or not sched.running:
        return 0
    now = now or datetime.now(UTC)
    picked = 0
    for row in schedules.pending_run_starts(wf.store):
        if sched.get_job(scheduler.run_start_job_id(row["id"])) or wf.busy(f"fire-{row['id']}"):
            continue
        picked += 1
        at = datetime.fromisoformat(row["run_at"])
        late = (now - at).total_seconds()
        if late > grace:
            await expire_missed(wf, row["id"], late)
        elif late >= 0:
            wf.spawn(fire_run(wf, row["id"]), f"fire-{row['id']}")
        else:
            _add_job(wf, row["id"], at)
    return picked
