"""The bot's own checks of the checklist items: it proves every item it can.

Each check returns ``{"status", "reason"}`` (see :func:`bot.rules.checklist.result`); an
unexpected error or a slow server fails only its own item.

    checks = await run_checks(config, env, plan)
    checks["pool"]   # {"status": "pass", "reason": "pgBouncer: 0 clients waiting …"}
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actions.backup import get_backup, preflight
from actions.db import database_name
from actions.drift import DriftReport, check_environment
from actions.errors import ActionError
from actions.health import check_health_url
from actions.pgbouncer import pool_health
from actions.rehearsal import latest_rehearsal, stale_reason
from actions.status import migration_status
from bot.config import Config, Environment
from bot.rules.checklist import items_for, result

log = logging.getLogger(__name__)


async def staging_gate(config: Config, env: Environment, plan: dict[str, Any]) -> dict[str, str]:
    """The environments ``env`` requires have these exact migrations applied, same checksums."""
    if not env.requires:
        return result("na", f"{env.name} requires no earlier environment")
    wanted = {m["name"]: m["checksum"] for m in plan.get("migrations", [])}
    problems, proofs = [], []
    for name in env.requires:
        earlier = config.environment(name)
        if earlier is None:
            problems.append(f"{name} is not configured")
            continue
        try:
            status = await migration_status(earlier.migration_url, earlier.migrations_dir)
        except ActionError as exc:
            problems.append(f"cannot read {earlier.name}'s status: {exc}")
            continue
        missing = [m for m in wanted if m not in status.applied_checksums]
        differ = [m for m in wanted if m in status.applied_checksums
                  and status.applied_checksums[m] != wanted[m]]
        if missing:
            problems.append(f"{earlier.name} has not applied {', '.join(missing)}")
        if differ:
            problems.append(f"{earlier.name} applied a different version of {', '.join(differ)}")
        if not missing and not differ:
            proofs.append(earlier.name)
    if problems:
        return result("fail", "; ".join(problems))
    return result("pass", f"{', '.join(proofs)} applied these {len(wanted)} migrations with the same checksums")


async def backup_check(env: Environment) -> dict[str, str]:
    try:
        checks = await preflight(env.migration_url, env.backup_dir, env.name, free_margin=env.backup_free_margin)
    except ActionError as exc:
        return result("fail", str(exc))
    failed = [c for c in checks if not c.ok]
    if failed:
        return result("fail", "; ".join(c.message for c in failed))
    passed = ", ".join(c.name.replace("_", " ") for c in checks if not c.skipped)
    return result("pass", f"backup pre-flight passed ({passed})")


def downtime_check(plan: dict[str, Any]) -> dict[str, str]:
    lint = plan.get("lint") or {}
    if lint.get("error"):
        return result("manual", f"lint could not run ({lint['error']}): decide on a window yourselves")
    if lint.get("zero_downtime_safe"):
        return result("na", "not needed: every pending migration is zero-downtime safe")
    risky = [m["name"] for m in lint.get("migrations", []) if m.get("verdict") == "risky"]
    return result("manual", f"risky: {', '.join(risky) or 'see lint'}; confirm a maintenance window")


async def monitoring_check(env: Environment) -> dict[str, str]:
    if not env.health_url:
        return result("manual", "no health_url configured: confirm monitoring yourselves")
    check = await check_health_url(env.health_url)
    status = {"pass": "pass", "warn": "manual"}.get(check.status, "fail")
    return result(status, f"health URL: {check.reason}")


async def pool_check(env: Environment) -> dict[str, str]:
    if not env.pgbouncer_admin_url:
        return result("manual", "no pgbouncer_admin_url configured: confirm the pool yourselves")
    try:
        health = await pool_health(env.pgbouncer_admin_url, database_name(env.database_url))
    except ActionError as exc:
        return result("fail", f"pgBouncer: {exc}")
    status = {"ok": "pass", "pass": "pass"}.get(health.verdict, "fail")
    return result(status, f"pgBouncer: {health.reason}")


async def run_checks(config: Config, env: Environment, plan: dict[str, Any], *,
                     found: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """Every automatic check at once; an unexpected error fails only its own item.

    ``found`` receives what a check found beyond its result, for the thread (``found["drift"]``: the
    :class:`actions.drift.DriftReport` of the "Schema matches the migrations" item).
    """

    async def guarded(key: str, coro: Any) -> tuple[str, dict[str, str]]:
        try:
            return key, await asyncio.wait_for(coro, timeout=60)
        except TimeoutError:
            return key, result("fail", "the check did not finish within 60 s; press Re-check")
        except Exception as exc:  # one broken check must not hide the others
            log.exception("checklist item %s failed", key)
            return key, result("fail", f"the check failed: {exc}")

    pairs = await asyncio.gather(
        guarded("staging", staging_gate(config, env, plan)),
        guarded("backup", backup_check(env)),
        guarded("monitoring", monitoring_check(env)),
        guarded("pool", pool_check(env)),
        *([guarded("drift", drift_item(env, found if found is not None else {}))] if env.drift_check else []),
    )
    checks = dict(pairs)
    if env.require_rehearsal:
        checks["rehearsal"] = rehearsal_item(plan.get("rehearsal") or rehearsal_status(env, plan))
    unposted = plan.get("sql_unposted") or []
    posting = len(plan.get("migrations") or []) if plan.get("sql_posting") else 0
    checks["review"] = (result("pending", f"the SQL of {posting} migration(s) is being posted in the thread, paced "
                                          "for Slack; tick once you have read it") if posting and not unposted
                        else result("fail", f"Slack refused the SQL of {len(unposted)} migration(s) in the thread "
                                       f"({', '.join(unposted[:3])}{'…' if len(unposted) > 3 else ''}): press "
                                       "Re-check to post it again") if unposted
                        else result("manual", "read the SQL in the thread, then tick"))
    checks["downtime"] = downtime_check(plan)
    checks["rollback_plan"] = rollback_plan_item(plan)
    checks["notification"] = notification_check(plan.get("venue"))
    return {i.key: checks[i.key] for i in items_for(checks)}


def rollback_plan_item(plan: dict[str, Any]) -> dict[str, str]:
    """"Rollback plan": a person ticks it; a rehearsal adds how long restoring the backup took.

    >>> rollback_plan_item({"rehearsal": {"restore_tested": "restore tested on 2024-05-01: 12 s for 1.2 GB"}})["reason"]
    'review the rollback procedure, then tick; restore tested on 2024-05-01: 12 s for 1.2 GB (rehearsal)'
    """
    tested = (plan.get("rehearsal") or {}).get("restore_tested")
    return result("manual", "review the rollback procedure, then tick" + (f"; {tested} (rehearsal)" if tested else ""))


# --- the policy items: a fresh rehearsal, a schema that matches the migrations --------------------------


def rehearsal_status(env: Environment, plan: dict[str, Any]) -> dict[str, Any] | None:
    """The latest kept rehearsal of ``env`` measured against this plan, or None when there is none.

    ``stale`` says why it no longer describes this run (a migration file changed or is new, a newer
    backup exists), None while it is fresh.
    """
    kept = latest_rehearsal(env.backup_dir, env.name)
    if kept is None:
        return None
    try:
        newest: str | None = get_backup(env.backup_dir, env.name, "latest").id
    except ActionError:
        newest = None
    pending = {m["name"]: m["checksum"] for m in plan.get("migrations", [])}
    failed = next((m for m in kept.get("migrations", []) if m.get("status") == "failed"), None)
    return {
        "at": kept.get("started_at"), "ok": bool(kept.get("ok")), "backup_id": kept.get("backup_id"),
        "stale": stale_reason(kept.get("checksums") or {}, pending=pending, rehearsed_backup=kept.get("backup_id"),
                              newest_backup=newest),
        "restore_tested": kept.get("restore_tested"),
        "failed": f"{failed['name']}: {failed.get('verdict')}" if failed else None,
        "verdicts": {m["name"]: m.get("verdict") for m in kept.get("migrations", []) if m.get("status") == "applied"},
    }


def rehearsal_item(status: dict[str, Any] | None) -> dict[str, str]:
    """``require_rehearsal``: passes only for a fresh rehearsal in which every pending migration applied."""
    if status is None:
        return result("fail", "no rehearsal yet: press Rehearse (or `migrabot rehearse ENV`); Run waits for one")
    when = str(status.get("at") or "")[:16].replace("T", " ")
    if status.get("stale"):
        return result("fail", f"the rehearsal of {when} UTC is stale ({status['stale']}): rehearse again")
    if not status.get("ok"):
        return result("fail", f"the rehearsal of {when} UTC failed ({status.get('failed') or 'see the thread'}): "
                              "fix the migration, then rehearse again")
    return result("pass", f"rehearsed on a restored copy on {when} UTC, every migration applied")


async def drift_item(env: Environment, found: dict[str, Any]) -> dict[str, str]:
    """``drift_check``: the live schema is what the applied migrations build (``actions.drift``).

    A drifted schema fails the item (``drift_action = "block"``) or only warns (``"warn"``).
    """
    bad = "fail" if env.drift_action == "block" else "warn"
    try:
        report: DriftReport = await check_environment(env, prisma=False)
    except ActionError as exc:
        return result(bad, f"the schema could not be checked: {exc}")
    found["drift"] = report
    if report.in_sync:
        return result("pass", f"the live schema matches the {len(report.applied)} applied migration(s) "
                              f"({report.expected_objects} objects compared)")
    if report.drifted:
        n = report.count()
        return result(bad, f"{n} difference{'s' if n != 1 else ''} between the migrations and the database "
                           "(listed in the thread)")
    return result(bad, f"the schema could not be compared: {report.problem}")


def notification_check(venue: dict[str, Any] | None) -> dict[str, str]:
    """"Team notification": passes only where people besides the requester saw the run message.

    ``venue`` is what ``conversations.info`` said about where the run message went (stored in the
    plan): a DM with the app, or a conversation with nobody but the requester (and the bot), is
    not a team notification. A slash command's ``channel_name`` is no proof (Slack sends
    ``directmessage`` or ``privategroup`` there), so without a venue the item is left to a person.

    >>> notification_check({"kind": "public", "name": "deploys", "others": 4})["status"]
    'pass'
    >>> notification_check({"kind": "im", "name": "", "others": 0})["status"]
    'manual'
    """
    if not venue:
        return result("manual", "the bot could not tell who saw this run message: announce it to the team, "
                                "then tick")
    where = f"#{venue['name']}" if venue.get("name") else "this conversation"
    if venue.get("kind") == "im":
        return result("manual", "this run was requested in a direct message with the bot, which nobody else sees: "
                                "announce it in the team channel, then tick")
    if not venue.get("others"):
        return result("manual", f"nobody but the requester is in {where}: announce it to the team, then tick")
    return result("pass", f"this run was announced in {where} ({venue['others']} other member(s))")
