"""`/db report|health|blockers ENV` and the Terminate button, after the handler's ``ack()``.

Answers go to the channel as a message (the team wants to see them); a failure (cannot
connect, ...) goes to the person only, in one sentence. The monitoring queries use the
environment's direct URL (``migration_url``): pgBouncer would refuse their
``statement_timeout`` start-up setting, and pids are the server's, not the pooler's.

    await post_report(wf, wf.env("prod"), actor)
    await request_terminate(wf, wf.env("prod"), 4242, actor)   # a run of kind "terminate"
"""

from __future__ import annotations

import logging
from typing import Any

from actions.errors import ActionError
from bot import approval_policy
from bot.actor import Actor, refuse, tell
from bot.config import Environment
from bot.render import messages, reports
from bot.run_open import open_run, post_or_cancel, preparing
from bot.workflow import Workflow
from state import locks, runs

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
    from actions.report import monitoring_report

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
    from actions.health import health_check

    health = await health_check(env, timeout=env.connect_timeout)
    wf.audit(actor.user, "db_health", env=env.name, detail=health.verdict)
    return await _post(wf, actor, env, "health", reports.health_message(health))


async def post_blockers(wf: Workflow, env: Environment, actor: Actor) -> str | None:
    """Who blocks whom, with a Terminate button per root blocker."""
    from actions.lock_chains import blocking_sessions, find_blockers

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


async def current_blocker(wf: Workflow, env: Environment, pid: int, *, patience: float | None = None,
                          poll: float = 0.1) -> tuple[Any, list[int]] | None:
    """Blocker ``pid`` and the pids it blocks, or None when it blocked nobody for ``patience`` seconds.

    A migration that retries with backoff waits for its lock only part of the time, so one look
    can miss that ``pid`` still blocks it: the default patience covers a retry's whole backoff
    while a migration runs on ``env``, a couple of seconds otherwise.
    """
    import asyncio

    from actions.lock_chains import find_blockers

    if patience is None:
        patience = min(env.retry.max_delay + env.lock_timeout + 1, 40.0) if _migrating(wf, env) else 2.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        chains = await find_blockers(env.migration_url, timeout=env.connect_timeout)
        blocked = [c.waiting.pid for c in chains for b in c.blockers if b.pid == pid]
        session = next((b for c in chains for b in c.blockers if b.pid == pid), None)
        if session is not None:
            return session, blocked
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(poll)


def _migrating(wf: Workflow, env: Environment) -> bool:
    return any(r["kind"] == "migrate" and r["status"] == "running" for r in runs.open_runs(wf.store, env.name))


async def request_terminate(wf: Workflow, env: Environment, pid: int, actor: Actor) -> int | None:
    """The Terminate button: a run of kind ``terminate`` with the usual lock and approvals.

    The button's confirm dialog is the confirmation; where no approval is needed the run
    starts at once, otherwise it waits for approvals and its Run button.
    """
    reason = approval_policy.may_request(env, actor.user)
    if reason:
        await refuse(wf, actor, reason, env=env.name)
        return None
    try:
        found = await current_blocker(wf, env, pid)
    except (ActionError, TimeoutError) as exc:
        await refuse(wf, actor, f"cannot check pid {pid} on {env.name}: {exc or 'timed out'}", env=env.name)
        return None
    if found is None:
        await tell(wf, actor, messages.notice(
            f":information_source: pid {pid} no longer blocks anyone on {env.name} (it finished or ended); "
            f"nothing to terminate. `/db blockers {env.name}` lists the current blockers."))
        return None
    session, blocked = found
    plan = {"pid": pid, "user": session.user, "application": session.application, "state": session.state,
            "query": session.query, "db": session.database, "xact_age": session.xact_age, "blocks": blocked}
    holder = locks.holder_of(wf.store, env.name)
    other = runs.get(wf.store, holder["run_id"]) if holder else None
    # the runbook's "Migration Hangs": ending what blocks a running migration is the remedy,
    # so that migration's lock does not stand in the way (approvals still do)
    bypass = bool(other and other.get("status") == "running" and other.get("kind") == "migrate")
    if bypass and holder:
        plan["notes"] = [f":information_source: {env.name} is locked by running migration run "
                         f"#{holder['run_id']}; this terminate does not wait for that lock."]
    run_id = await open_run(wf, env, actor, "terminate", plan=plan, lock=not bypass)
    if run_id is None:
        return None
    async with preparing(wf, run_id, env, actor):
        if not await post_or_cancel(wf, run_id, env, actor, f"terminate pid {pid} (user {session.user})"):
            return None
        view = await wf.view(run_id)
        if view is not None and view.ready:
            from bot.run_controls import start

            await start(wf, run_id, actor)
        return run_id
    return None
