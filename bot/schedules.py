"""Scheduled runs: `/migrate ENV at TIME|in DURATION`, `/migrate schedule`, and the start at that time.

    await schedule_run(wf, wf.env("prod"), actor, at)   # run message now, start at ``at``
    await fire_run(wf, "run-42")                        # what the job does at ``at`` (callable in tests)

The run is requested at once (lock, checklist, approvals: the usual run message, status
``scheduled``); a row in ``schedules`` and an APScheduler job start it at its time, and
the row survives a restart (:func:`bot.scheduler.start` re-creates the job).

At its time a run starts only when it is ready: checklist complete and approvals met
(approvals expire after ``approval_expiry``, so they must be recent enough at the start).
Otherwise the bot says in the thread what is missing and the run stays open (``awaiting``)
for people to finish it and press Run, or to abort it; nothing runs by itself late.

A typed confirmation cannot be typed by nobody at 3 a.m.: on a scheduled run that needs one
(production), the Run button ("Confirm now") opens the usual typed confirmation and
*records* it instead of starting; a run whose confirmation was not recorded does not start.
Abort on a scheduled run cancels the schedule.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import blocks as bk
from bot.render import messages, reports
from bot.run_view import RunView
from bot.workflow import Workflow
from state import runs
from state import schedules as rows
from state.store import now_iso

log = logging.getLogger(__name__)


def job_id(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def when_text(iso: str | None, now: datetime | None = None) -> str:
    """``2026-01-01T22:00:00+01:00`` → ``2026-01-01 22:00 (UTC+01:00), in 2h 3m``.

    >>> when_text("2026-01-01T22:00:00+00:00", datetime(2026, 1, 1, 21, 0, tzinfo=UTC))
    '2026-01-01 22:00 (UTC), in 1h 0m'
    """
    if not iso:
        return "?"
    at = datetime.fromisoformat(iso)
    offset = at.strftime("%z")
    zone = "UTC" if offset in ("+0000", "") else f"UTC{offset[:3]}:{offset[3:]}"
    seconds = (at - (now or datetime.now(UTC))).total_seconds()
    rel = f"in {bk.duration(seconds)}" if seconds >= 1 else "now"
    fmt = "%Y-%m-%d %H:%M:%S" if at.second else "%Y-%m-%d %H:%M"
    return f"{at.strftime(fmt)} ({zone}), {rel}"


def slack_date(iso: str) -> str:
    """An absolute time every reader sees in their own time zone (fallback: the configured one).

    >>> slack_date("2026-01-01T22:00:00+00:00")
    '<!date^1767304800^{date_short_pretty} at {time}|2026-01-01 22:00 (UTC)>'
    """
    fallback = when_text(iso).rpartition(",")[0]
    return f"<!date^{int(datetime.fromisoformat(iso).timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


# --- requesting and listing -------------------------------------------------------------------------


async def schedule_run(wf: Workflow, env: Environment, actor: Actor, at: datetime) -> int | None:
    """`/migrate ENV at TIME`: request the run now (status ``scheduled``) and start it at ``at``."""
    from bot.migrate_flow import request_run

    iso = at.isoformat(timespec="seconds")
    run_id = await request_run(wf, env, actor, scheduled_for=iso)
    if run_id is None:
        return None  # refused, locked or nothing pending: the person was told why
    schedule_id = rows.add_run_start(wf.store, run_id=run_id, env=env.name, run_at=iso, created_by=actor.user)
    wf.audit(actor.user, "schedule", run=runs.get(wf.store, run_id), detail=f"start at {iso}")
    add_job(wf, schedule_id, at)
    return run_id


def add_job(wf: Workflow, schedule_id: str, at: datetime) -> None:
    """The APScheduler job that fires ``schedule_id`` (none when the scheduler is not running, e.g. the CLI)."""
    scheduler = getattr(wf, "scheduler", None)
    if scheduler is None or not scheduler.running:
        log.warning("no scheduler running: schedule %s is stored and starts when the bot starts", schedule_id)
        return
    from apscheduler.triggers.date import DateTrigger

    async def job() -> None:  # a coroutine, so it runs on the loop and hands over to wf (tracked by settle)
        wf.spawn(fire_run(wf, schedule_id), f"fire-{schedule_id}")

    scheduler.add_job(job, DateTrigger(run_date=at), id=job_id(schedule_id), replace_existing=True,
                      misfire_grace_time=None, coalesce=True)


def cancel_for_run(wf: Workflow, run_id: int) -> None:
    """Cancel the scheduled start of ``run_id`` (if any): its row and its job."""
    for schedule_id in rows.cancel_for_run(wf.store, run_id, "cancelled before its time"):
        scheduler = getattr(wf, "scheduler", None)
        if scheduler is not None and scheduler.get_job(job_id(schedule_id)):
            scheduler.remove_job(job_id(schedule_id))


async def list_scheduled(wf: Workflow, actor: Actor) -> None:
    """`/migrate schedule`: pending scheduled runs and the recurring jobs, to the person only."""
    from bot.run_kinds import KINDS

    listed = []
    for row in rows.pending_run_starts(wf.store):
        run = runs.get(wf.store, row["run_id"]) or {}
        env = wf.config.environment(row["env"])
        kind = KINDS.get(run.get("kind", "migrate"))
        note = ""
        if env is not None and kind is not None and kind.confirm_word(env):
            confirmed = (run.get("plan") or {}).get("confirmed")
            note = (f"; typed confirmation by {bk.user(confirmed['by'])}" if confirmed
                    else "; *typed confirmation still needed* (Confirm now on the run message)")
        listed.append({"run_id": row["run_id"], "env": row["env"], "at": when_text(row["run_at"]),
                       "by": row["created_by"], "note": note})
    from bot import scheduler

    await tell(wf, actor, reports.schedule_list(listed, scheduler.recurring_jobs(wf.config)))


# --- typed confirmation ahead of time ----------------------------------------------------------------


async def press_run(wf: Workflow, view: RunView, actor: Actor) -> None:
    """The Run ("Confirm now") button on a scheduled run: open the typed confirmation, or explain."""
    word = view.kind.confirm_word(view.env)
    at = when_text(view.run.get("scheduled_for"))
    if not word:
        await tell(wf, actor, messages.notice(
            f":alarm_clock: run #{view.id} starts by itself at {at} once its checklist and approvals are complete."))
        return
    if not actor.trigger_id:
        await refuse(wf, actor, "this needs a typed confirmation; press the button again", run=view.run)
        return
    from bot.run_controls import describe

    modal = messages.confirm_modal(view.id, view.env.name, f"{describe(view)} at {at}", word)
    if await wf.slack.open_modal(actor.trigger_id, modal) is None:
        await refuse(wf, actor, "Slack did not open the confirmation; press the button again", run=view.run)


async def record_confirmation(wf: Workflow, run_id: int, actor: Actor) -> None:
    """The typed confirmation of a scheduled run was right: remember it for the start."""
    run = runs.get(wf.store, run_id)
    if run is None or run["status"] != "scheduled":
        return
    plan = dict(run.get("plan") or {})
    plan["confirmed"] = {"by": actor.user, "at": now_iso()}
    runs.update(wf.store, run_id, plan=plan)
    wf.audit(actor.user, "confirm_scheduled", run=run)
    wf.refresh(run_id)


def confirmation_missing(view: RunView) -> str | None:
    if view.kind.confirm_word(view.env) and not view.plan.get("confirmed"):
        return "typed confirmation (record it beforehand with Confirm now)"
    return None


# --- at the time -------------------------------------------------------------------------------------


async def fire_run(wf: Workflow, schedule_id: str) -> str:
    """Start the scheduled run if it is ready; returns the schedule's new status.

    scheduled → awaiting, then :func:`bot.run_controls.start` (awaiting → running, once).
    """
    from bot.run_controls import start

    row = rows.get(wf.store, schedule_id)
    if row is None or row["status"] != "pending":
        return row["status"] if row else "missing"
    run = runs.get(wf.store, row["run_id"])
    if run is None or run["status"] != "scheduled":
        status = run["status"] if run else "gone"
        rows.finish(wf.store, schedule_id, "cancelled", f"the run is {status}")
        return "cancelled"
    if not runs.transition(wf.store, run["id"], ["scheduled"], "awaiting"):
        return rows.get(wf.store, schedule_id)["status"]  # type: ignore[index]
    view = await wf.view(run["id"])
    assert view is not None
    missing = view.missing() + [m for m in [confirmation_missing(view)] if m]
    if missing:
        detail = "; ".join(missing)
        rows.finish(wf.store, schedule_id, "blocked", detail)
        wf.audit("scheduler", "scheduled_start_blocked", run=run, detail=detail)
        await wf.reply(run, f":alarm_clock: Scheduled start of run #{run['id']} did not happen: not ready. "
                            f"Missing: {detail}. The run stays open: finish these and press Run, or Abort it.",
                       broadcast=True)
        wf.refresh(run["id"])
        return "blocked"
    rows.finish(wf.store, schedule_id, "fired", "started")
    confirmed = view.plan.get("confirmed") or {}
    actor = Actor(user=confirmed.get("by") or run["requested_by"], channel=run["channel"])
    wf.audit("scheduler", "scheduled_start", run=run, detail=f"scheduled for {row['run_at']}")
    await wf.reply(run, f":alarm_clock: Scheduled start: run #{run['id']} is starting now.")
    if not await start(wf, run["id"], actor):
        wf.refresh(run["id"])
    return "fired"


async def expire_missed(wf: Workflow, schedule_id: str, late_by: float) -> None:
    """The bot was down well past the start: do not run late, close the run and say so."""
    row = rows.get(wf.store, schedule_id)
    if row is None or not rows.finish(wf.store, schedule_id, "missed", f"bot was down; {bk.duration(late_by)} late"):
        return
    reason = (f"the bot was not running at the scheduled time ({when_text(row['run_at'])}); it did not start "
              f"{bk.duration(late_by)} late. Request a new run for another window.")
    from bot.migrate_flow import release

    release(wf, row["run_id"], row["env"], "expired", error=reason)
    run = runs.get(wf.store, row["run_id"])
    if run:
        wf.audit("scheduler", "scheduled_start_missed", run=run, detail=reason)
        await wf.reply(run, f":alarm_clock: Run #{run['id']} expired: {reason}")
        wf.refresh(run["id"])
