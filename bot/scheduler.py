"""The APScheduler scheduler that starts with the app, and the recurring jobs it runs.

    scheduler = await start(wf)           # from bot.app.start_background; scheduler.shutdown() at exit

APScheduler keeps its jobs in memory only: what must survive a restart is in migrabot's own
state (the ``schedules`` table), and the scheduled run starts are re-created from it by
:func:`bot.runs.scheduled.restore_run_starts` through :func:`add_date_job`. With several replicas
only the leader runs a scheduler (:class:`bot.app.Replica`; APScheduler 3 must never share a job
store between schedulers); it picks up starts scheduled on other replicas from the table.

Recurring jobs, each a plain async function that can also be called directly (tests do):

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
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from actions import drift_memory
from actions.drift import check_environment
from actions.errors import ActionError
from actions.health import health_check
from actions.report import monitoring_report
from actions.retention import prune
from bot.config import Config, Environment
from bot.render import drift as drift_render
from bot.render import messages, reports
from bot.workflow import Workflow
from state import runs, schedules

log = logging.getLogger(__name__)
RETENTION_TIME = (3, 30)  # hour, minute in the configured time zone
BOT = "scheduler"


async def start(wf: Workflow, *, sweep_interval: float = 30.0) -> AsyncIOScheduler:
    """Start the scheduler on the running loop with the recurring jobs; ``wf.scheduler`` is set to it."""
    scheduler = AsyncIOScheduler(timezone=wf.config.timezone)
    scheduler.start()
    wf.scheduler = scheduler
    for env in wf.config.environments.values():
        if env.report_cron:
            _cron(wf, scheduler, f"report:{env.name}", env.report_cron, post_daily_report, env)
        if env.health_cron:
            _cron(wf, scheduler, f"health:{env.name}", env.health_cron, watch_health, env)
        if env.drift_cron:
            _cron(wf, scheduler, f"drift:{env.name}", env.drift_cron, watch_drift, env)
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
        if env.drift_cron:
            out.append(f"{env.name}: drift check at `{env.drift_cron}`, posted when its findings change")
        if env.retention.keep_last is not None or env.retention.keep_days is not None:
            out.append(f"{env.name}: backup retention daily at {RETENTION_TIME[0]:02d}:{RETENTION_TIME[1]:02d}")
    return out


# --- one-off jobs (scheduled run starts) ----------------------------------------------------------


def run_start_job_id(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def add_date_job(wf: Workflow, job_id: str, at: datetime, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``job`` once at ``at`` (nothing when the scheduler is not running: in the CLI, or on a
    replica that does not lead; the row in ``schedules`` is the truth, and the leader makes the job
    from it, at its next heartbeat or when a bot starts)."""
    scheduler = wf.scheduler
    if scheduler is None or not scheduler.running:
        log.info("no scheduler here: job %s is stored; the leader (or the next bot to start) makes it", job_id)
        return
    scheduler.add_job(job, DateTrigger(run_date=at), id=job_id, replace_existing=True,
                      misfire_grace_time=None, coalesce=True)


def remove_job(wf: Workflow, job_id: str) -> None:
    scheduler = wf.scheduler
    if scheduler is not None and scheduler.get_job(job_id):
        scheduler.remove_job(job_id)


# --- recurring jobs ----------------------------------------------------------------------------------


def _channel(env: Environment) -> str | None:
    if not env.channel:
        log.warning("%s has a scheduled job but no channel to post to: set channel in its configuration", env.name)
        return None
    return env.channel


async def post_daily_report(wf: Workflow, env: Environment) -> str | None:
    """``report_cron``: the `/db report` of ``env`` in its channel."""
    channel = _channel(env)
    if channel is None:
        return None
    try:
        report = await monitoring_report(env.migration_url, long_query_threshold=env.long_query_threshold,
                                         timeout=env.connect_timeout)
    except ActionError as exc:
        wf.audit(BOT, "report_failed", env=env.name, detail=str(exc))
        return await wf.slack.post(channel, *messages.scheduled_report_failed(env.name, str(exc)))
    text, blocks = reports.report_message(env.name, report)
    wf.audit(BOT, "db_report", env=env.name, detail="scheduled")
    return await wf.slack.post(channel, text, blocks)


async def watch_health(wf: Workflow, env: Environment) -> str | None:
    """``health_cron``: a health check that posts to the channel only when something fails."""
    channel = _channel(env)
    health = await health_check(env, timeout=env.connect_timeout)
    wf.audit(BOT, "health_check", env=env.name, detail=health.verdict)
    if channel is None or health.verdict != "fail":
        return None
    text, blocks = reports.health_message(health, scheduled=True)
    return await wf.slack.post(channel, text, blocks)


async def prune_backups(wf: Workflow, env: Environment) -> list[str]:
    """Daily retention: remove the backups ``env.retention`` lets go (never the newest verified one)."""
    try:
        removed = await asyncio.to_thread(prune, env.backup_dir, env.name, env.retention)
    except (ActionError, OSError) as exc:
        wf.audit(BOT, "prune_failed", env=env.name, detail=str(exc))
        if env.channel:
            await wf.slack.post(env.channel, *messages.retention_failed(env.name, str(exc)))
        return []
    if removed:
        wf.audit(BOT, "prune", env=env.name, detail=", ".join(removed))
    return removed


# --- reminders and expiry ----------------------------------------------------------------------------


async def sweep(wf: Workflow, *, since: datetime, now: datetime | None = None) -> None:
    """Approval reminders (once per run) and re-renders of runs whose approvals expired since ``since``."""
    now = now or datetime.now(UTC)
    for run in runs.open_runs(wf.store):
        if run["status"] not in runs.WAITING:
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
    if view is None or view.status not in runs.WAITING or view.env.approval_reminder is None:
        return False
    a = view.approval
    if a.needed == 0 or a.met or a.rejected:
        return False
    waited = ((now or datetime.now(UTC)) - datetime.fromisoformat(view.run["created_at"])).total_seconds()
    if waited < view.env.approval_reminder:
        return False
    if not schedules.mark_once(wf.store, f"reminder-{run_id}", kind="reminder", env=view.env.name, run_id=run_id):
        return False
    await wf.reply(view.run, *messages.approval_reminder(view, waited))
    wf.audit(BOT, "approval_reminder", run=view.run, detail=f"{a.count}/{a.needed}")
    return True


async def watch_drift(wf: Workflow, env: Environment) -> str | None:
    """``drift_cron``: a drift check posted to the channel only when its findings changed since the last
    check (remembered in ``<backup_dir>/<env>/drift/last.json``); a first check that is in sync says nothing."""
    try:
        report = await check_environment(env)
    except ActionError as exc:
        wf.audit(BOT, "drift_failed", env=env.name, detail=str(exc))
        return None
    before = drift_memory.last_fingerprint(env.backup_dir, env.name)
    changed = drift_memory.remember(env.backup_dir, env.name, drift_memory.fingerprint(report),
                                    drift_render.headline(report))
    channel = _channel(env)
    if not changed or (before is None and report.in_sync) or channel is None:
        return None
    wf.audit(BOT, "drift_changed", env=env.name, detail=drift_render.headline(report))
    return await wf.slack.post(channel, *drift_render.drift_message(
        report, origin="scheduled drift check (posted because the findings changed)"))
