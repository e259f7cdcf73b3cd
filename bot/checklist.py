"""The runbook's pre-migration checklist: eight items, the bot proving every one it can.

Each item ends in one of four states: ``pass`` (the bot proved it, and says how), ``na``
(does not apply here, and why), ``fail`` (the bot found a problem: it blocks the run until a
re-check passes) or ``manual`` (a person ticks it; every tick is attributed and audited).

    >>> [i.key for i in ITEMS]
    ['review', 'staging', 'backup', 'downtime', 'rollback_plan', 'notification', 'monitoring', 'pool']
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from actions.errors import ActionError
from bot.config import Config, Environment
from bot.redact import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    key: str
    label: str
    hint: str


ITEMS = (
    Item("review", "Review migration files", "every pending migration's SQL is in the thread"),
    Item("staging", "Test on staging", "the environments before this one ran exactly these migrations"),
    Item("backup", "Database backup", "the backup system works; a fresh backup is taken before applying"),
    Item("downtime", "Downtime window", "needed when a migration is not zero-downtime safe"),
    Item("rollback_plan", "Rollback plan", "rollback procedure reviewed; `/rollback ENV` restores a backup"),
    Item("notification", "Team notification", "the team is told of the upcoming migration"),
    Item("monitoring", "Monitor setup", "monitoring and alerting are active"),
    Item("pool", "Connection pool", "pgBouncer is configured and healthy"),
)
ITEM_KEYS = tuple(i.key for i in ITEMS)
LABELS = {i.key: i.label for i in ITEMS}


def result(status: str, reason: str) -> dict[str, str]:
    return {"status": status, "reason": redact(reason)}


def is_done(key: str, checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> bool:
    check = checks.get(key, {"status": "pending"})
    if check["status"] in ("pass", "na"):
        return True
    if check["status"] == "manual":
        return bool(ticks.get(key, {}).get("checked"))
    return False


def summary(checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(items done, items in all)."""
    return sum(is_done(k, checks, ticks) for k in ITEM_KEYS), len(ITEM_KEYS)


async def staging_gate(config: Config, env: Environment, plan: dict[str, Any]) -> dict[str, str]:
    """The environments ``env`` requires have these exact migrations applied, same checksums."""
    from actions.status import migration_status

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
    from actions.backup import preflight

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
    from actions.health import check_health_url

    check = await check_health_url(env.health_url)
    status = {"pass": "pass", "warn": "manual"}.get(check.status, "fail")
    return result(status, f"health URL: {check.reason}")


async def pool_check(env: Environment) -> dict[str, str]:
    if not env.pgbouncer_admin_url:
        return result("manual", "no pgbouncer_admin_url configured: confirm the pool yourselves")
    from actions.db import database_name
    from actions.pgbouncer import pool_health

    try:
        health = await pool_health(env.pgbouncer_admin_url, database_name(env.database_url))
    except ActionError as exc:
        return result("fail", f"pgBouncer: {exc}")
    status = {"ok": "pass", "pass": "pass"}.get(health.verdict, "fail")
    return result(status, f"pgBouncer: {health.reason}")


async def run_checks(config: Config, env: Environment, plan: dict[str, Any], *,
                     channel_name: str | None = None) -> dict[str, dict[str, str]]:
    """Every automatic check at once; an unexpected error fails only its own item."""

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
    )
    checks = dict(pairs)
    checks["review"] = result("manual", "read the SQL in the thread, then tick")
    checks["downtime"] = downtime_check(plan)
    checks["rollback_plan"] = result("manual", "review the rollback procedure, then tick")
    where = f"#{channel_name}" if channel_name else "the team channel"
    checks["notification"] = result("pass", f"this run was announced in {where}")
    return {k: checks[k] for k in ITEM_KEYS}
