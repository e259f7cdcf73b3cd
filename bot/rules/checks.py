"""The bot's own checks of the checklist items: it proves every item it can.

Each check returns ``{"status", "reason"}`` (see :func:`bot.rules.checklist.result`); an
unexpected error or a slow server fails only its own item.

    checks = await run_checks(config, env, plan, channel_name="deploys")
    checks["pool"]   # {"status": "pass", "reason": "pgBouncer: 0 clients waiting …"}
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actions.backup import preflight
from actions.db import database_name
from actions.errors import ActionError
from actions.health import check_health_url
from actions.pgbouncer import pool_health
from actions.status import migration_status
from bot.config import Config, Environment
from bot.rules.checklist import ITEM_KEYS, result

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
