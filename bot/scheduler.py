"""The APScheduler scheduler that starts with the app, and the recurring jobs it runs.

    scheduler = await start(wf)           # from bot.app.start_background; scheduler.shutdown() at exit

Jobs, each a plain async function that can also be called directly (tests do):

* scheduled run starts, re-created from the ``schedules`` table (:mod:`bot.schedules`); one
  past due by less than ``grace`` fires at once, one later than that is marked missed and its
  run expires (a migration does not start hours late because the bot was down);
* ``report_cron`` per environment: :func:`post_daily_report` posts `/db report` to ``env.channel``;
* ``health_cron`` per environment: :func:`watch_health` posts only when a check fails;
* backup retention (:func:`prune_backups`), daily at :data:`RETENTION_TIME`, where configured;
* :func:`sweep` every ``sweep_interval`` seconds: one approval reminder per run waiting
  longer than ``approval_reminder``, and a re-render when an approval has just expired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from actions.errors import ActionError
from bot import schedules
from bot.actor import Actor
from bot.config import Config, Environment
from bot.render import blocks as bk
from bot.render import reports
from bot.workflow import Workflow
from state import runs
from state import schedules as rows

log = logging.getLogger(__name__)
RETENTION_TIME = (3, 30)  # hour, minute in the configured time zone
MISSED_GRACE = 15 * 60.0  # seconds: a start at most this late still happens after a restart
BOT = "scheduler"


async def start(wf: Workflow, *, sweep_interval: float = 30.0, grace: float = MISSED_GRACE) -> AsyncIOScheduler:
    """Start the scheduler on the running loop with every job; ``wf.scheduler`` is set to it."""
    scheduler = AsyncIOScheduler(timezone=wf.config.timezone)
    scheduler.start()
    wf.scheduler = scheduler  # type: ignore[attr-defined]
    await restore_run_starts(wf, grace=grace)
    for env in wf.config.environments.values():
        if env.report_cron:
            _cron(wf, scheduler, f"report:{env.name}", env.report_cron, post_daily_report, env)
        if env.health_cron:
            _cron(wf, scheduler, f"health:{env.name}", env.health_cron, watch_health, env)
        if env.retention.keep_last is not None or env.retention.keep_days is not None:
            hour, minute = RETENTION_TIME
            _add(wf, scheduler, f"retention:{env.name}", CronTrigger(hour=hour, minute=minute,
                                                                    timezone=wf.config.timezone),
                 prune_backups, env)
    last = {"at": datetime.now(UTC)}

    async def sweep_since_last() -> None:
        now = datetime.now(UTC)
        since, last["at"] = last["at"], now
        await sweep(wf, since=since, now=now)

    scheduler.add_job(_spawner(wf, "sweep", sweep_since_last), IntervalTrigger(seconds=sweep_interval),
                      id="sweep", replace_existing=True, coalesce=True, max_instances=1)
    return scheduler


def _spawner(wf: Workflow, name: str, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    async def job() -> None:  # runs on the loop; the work is a wf task, so it is logged and settle() sees it
        wf.spawn(func(*args), name)
    return job


def _add(wf: Workflow, scheduler: AsyncIOScheduler, job_id: str, trigger: Any,
         func: Callable[..., Coroutine[Any, Any, Any]], env: Environment) -> None:
    scheduler.add_job(_spawner(wf, job_id, func, wf, env), trigger, id=job_id, replace_existing=True,
                      coalesce=True, max_instances=1, misfire_grace_time=3600)


def _cron(wf: Workflow, scheduler: AsyncIOScheduler, job_id: str, cron: str,
          func: Callable[..., Coroutine[Any, Any, Any]], env: Environment) -> None:
    _add(wf, scheduler, job_id, CronTrigger.from_crontab(cron, timezone=wf.config.timezone), func, env)


def recurring_jobs(config: Config) -> list[str]:
    """The recurring jobs the configuration asks for, in words (for `/migrate schedule`)."""
    out = []
    for env in config.environments.values():
        if env.report_cron:
            out.append(f"{env.name}: report to the channel at `{env.report_cron}` ({config.timezone})")
        if env.health_cron:
            out.append(f"{env.name}: health check at `{env.health_cron}`, posted when a check fails")
        if env.retention.keep_last is not None or env.retention.keep_days is not None:
            out.append(f"{env.name}: backup retention daily at {RETENTION_TIME[0]:02d}:{RETENTION_TIME[1]:02d}")
    return out


# --- scheduled run starts ----------------------------------------------------------------------------


async def restore_run_starts(wf: Workflow, *, grace: float = MISSED_GRACE, now: datetime | None = None) -> None:
    """Re-create the jobs of pending run starts after a restart; handle the ones that came due meanwhile."""
    now = now or datetime.now(UTC)
    for row in rows.pending_run_starts(wf.store):
        at = datetime.fromisoformat(row["run_at"])
        late = (now - at).total_seconds()
        if late > grace:
            await schedules.expire_missed(wf, row["id"], late)
        elif late >= 0:
            wf.spawn(schedules.fire_run(wf, row["id"]), f"fire-{row['id']}")
        else:
            schedules.add_job(wf, row["id"], at)


# --- recurring jobs ----------------------------------------------------------------------------------


def _channel_actor(env: Environment) -> Actor | None:
    if not env.channel:
        log.warning("%s has a scheduled job but no channel to post to: set channel in its configuration", env.name)
        return None
    return Actor(user=BOT, channel=env.channel)


async def post_daily_report(wf: Workflow, env: Environment) -> str | None:
    """``report_cron``: the `/db report` of ``env`` in its channel."""
    from actions.report import monitoring_report

    if _channel_actor(env) is None:
        return None

    try:
        report = await monitoring_report(env.migration_url, long_query_threshold=env.long_query_threshold,
                                         timeout=env.connect_timeout)
    except ActionError as exc:
        wf.audit(BOT, "report_failed", env=env.name, detail=str(exc))
        text = f":warning: The scheduled report of {env.name} could not run: {exc}"
        return await wf.slack.post(env.channel or "", text, [bk.section(text)])
    text, blocks = reports.report_message(env.name, report)
    wf.audit(BOT, "db_report", env=env.name, detail="scheduled")
    return await wf.slack.post(env.channel or "", text, blocks)


async def watch_health(wf: Workflow, env: Environment) -> str | None:
    """``health_cron``: a health check that posts to the channel only when something fails."""
    from actions.health import health_check

    actor = _channel_actor(env)
    health = await health_check(env, timeout=env.connect_timeout)
    wf.audit(BOT, "health_check", env=env.name, detail=health.verdict)
    if actor is None or health.verdict != "fail":
        return None
    text, blocks = reports.health_message(health, scheduled=True)
    return await wf.slack.post(actor.channel, text, blocks)


async def prune_backups(wf: Workflow, env: Environment) -> list[str]:
    """Daily retention: remove the backups ``env.retention`` lets go (never the newest verified one)."""
    from actions.retention import prune

    try:
        removed = await asyncio.to_thread(prune, env.backup_dir, env.name, env.retention)
    except (ActionError, OSError) as exc:
        wf.audit(BOT, "prune_failed", env=env.name, detail=str(exc))
        if env.channel:
            await wf.slack.post(env.channel, f":warning: Backup retention on {env.name} failed: {exc}")
        return []
    if removed:
        wf.audit(BOT, "prune", env=env.name, detail=", ".join(removed))
    return removed


# --- reminders and expiry ----------------------------------------------------------------------------


async def sweep(wf: Workflow, *, since: datetime, now: datetime | None = None) -> None:
    """Approval reminders (once per run) and re-renders of runs whose approvals expired since ``since``."""
    now = now or datetime.now(UTC)
    for run in runs.open_runs(wf.store):
        if run["status"] not in ("awaiting", "scheduled"):
            continue
        try:
            await remind_approvals(wf, run["id"], now=now)
            view = await wf.view(run["id"])
            expiry = timedelta(seconds=view.env.approval_expiry) if view else None
            if view and expiry is not None and any(
                    since < datetime.fromisoformat(v["at"]) + expiry <= now for v in view.approval.expired):
                wf.refresh(run["id"])
        except Exception:
            log.exception("sweep of run %s failed", run["id"])


async def remind_approvals(wf: Workflow, run_id: int, *, now: datetime | None = None) -> bool:
    """Ping the approvers once in the thread of a run still short of approvals after ``approval_reminder``."""
    view = await wf.view(run_id)
    if view is None or view.status not in ("awaiting", "scheduled") or view.env.approval_reminder is None:
        return False
    a = view.approval
    if a.needed == 0 or a.met or a.rejected:
        return False
    waited = ((now or datetime.now(UTC)) - datetime.fromisoformat(view.run["created_at"])).total_seconds()
    if waited < view.env.approval_reminder:
        return False
    if not rows.mark_once(wf.store, f"reminder-{run_id}", kind="reminder", env=view.env.name, run_id=run_id):
        return False
    who = " ".join(bk.user(x) for x in view.env.approvers) or "approvers"
    text = (f":bell: {who}: run #{run_id} on *{view.env.name}* has waited {bk.duration(waited)} for approvals "
            f"({a.count}/{a.needed}). Approve or reject on the run message; approvals count for "
            f"{bk.duration(view.env.approval_expiry)}.")
    await wf.reply(view.run, text, [bk.section(text)])
    wf.audit(BOT, "approval_reminder", run=view.run, detail=f"{a.count}/{a.needed}")
    return True
