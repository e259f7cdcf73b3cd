"""`/db report|health|blockers|drift ENV`, after the handler's ``ack()`` (Terminate is a run: bot/runs/terminate.py).

Answers go to the channel as a message (the team wants to see them); a failure (cannot
connect, ...) goes to the person only, in one sentence. The monitoring queries use the
environment's direct URL (``migration_url``): pgBouncer would refuse their
``statement_timeout`` start-up setting, and pids are the server's, not the pooler's.

    await post_report(wf, wf.env("prod"), actor)
"""

from __future__ import annotations

import logging
from typing import Any

from actions.drift import DriftReport, check_environment
from actions.errors import ActionError
from actions.health import health_check
from actions.lock_chains import blocking_sessions, find_blockers
from actions.report import monitoring_report
from bot.actor import Actor, refuse
from bot.config import Environment
from bot.render import drift as drift_render
from bot.render import reports
from bot.workflow import Workflow

log = logging.getLogger(__name__)


async def _post(wf: Workflow, actor: Actor, env: Environment, what: str, text_blocks: tuple[str, list[Any]],
                channel: str | None = None) -> str | None:
    text, blocks = text_blocks
    ts = await wf.slack.post(channel or actor.channel, text, blocks)
    if ts is None:
        await refuse(wf, actor, f"Slack refused the {what} message (is the bot in this channel? `/invite` it)",
                     env=env.name)
    return ts


async def post_report(wf: Workflow, env: Environment, actor: Actor, *, channel: str | None = None) -> str | None:
    """Run the monitoring queries and post the report; returns the message ts."""
    try:
        report = await monitoring_report(env.migration_url, long_query_threshold=env.long_query_threshold,
                                         timeout=env.connect_timeout)
    except ActionError as exc:
        await refuse(wf, actor, f"cannot report on {env.name}: {exc}", env=env.name, action="report_failed")
        return None
    wf.audit(actor.user, "db_report", env=env.name)
    return await _post(wf, actor, env, "report", reports.report_message(env.name, report), channel)


async def post_health(wf: Workflow, env: Environment, actor: Actor) -> str | None:
    """Every health check with its reason and the verdict (checks never raise: problems are reasons)."""
    health = await health_check(env, timeout=env.connect_timeout)
    wf.audit(actor.user, "db_health", env=env.name, detail=health.verdict)
    return await _post(wf, actor, env, "health", reports.health_message(health))


async def post_blockers(wf: Workflow, env: Environment, actor: Actor) -> str | None:
    """Who blocks whom, with a Terminate button per root blocker."""
    try:
        chains = await find_blockers(env.migration_url, timeout=env.connect_timeout)
    except ActionError as exc:
        await refuse(wf, actor, f"cannot list the blockers on {env.name}: {exc}", env=env.name,
                     action="blockers_failed")
        return None
    except TimeoutError:
        await refuse(wf, actor, f"listing the blockers on {env.name} took longer than {env.connect_timeout:g}s: "
                                "the server is overloaded; try again", env=env.name, action="blockers_failed")
        return None
    wf.audit(actor.user, "db_blockers", env=env.name, detail=f"{len(chains)} waiting")
    return await _post(wf, actor, env, "blockers", reports.blockers_message(env.name, chains,
                                                                           blocking_sessions(chains)))


async def post_drift(wf: Workflow, env: Environment, actor: Actor) -> str | None:
    """`/db drift ENV`: files vs ledger and the expected schema (built in a scratch database) vs the live one."""
    report = await drift_report(wf, env, actor)
    if report is None:
        return None
    wf.audit(actor.user, "db_drift", env=env.name, detail=drift_render.headline(report))
    return await _post(wf, actor, env, "drift", drift_render.drift_message(report))


async def drift_report(wf: Workflow, env: Environment, actor: Actor) -> DriftReport | None:
    """The drift check of ``env``, or None after telling ``actor`` why it could not run."""
    try:
        return await check_environment(env)
    except ActionError as exc:
        await refuse(wf, actor, f"cannot check {env.name} for drift: {exc}", env=env.name, action="drift_failed")
        return None

