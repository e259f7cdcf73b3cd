"""The runbook's post-migration verification as one health check per item.

    report = await health_check(env)
    report.verdict                 # "pass", "warn" or "fail": the worst of its checks
    [c.name for c in report.checks]
    # ['database', 'migrations', 'backup', 'health_url', 'pgbouncer']

* ``database``: ``SELECT 1`` on ``env.database_url`` (what the app uses) and its round trip;
* ``migrations``: ``migration_status`` on the direct URL: fail when a migration failed, warn
  when some are pending/edited/missing, pass when up to date;
* ``backup``: the newest backup's age and whether it was verified (warn when none, older
  than :data:`BACKUP_MAX_AGE`, or unverified; fail when the newest one failed);
* ``health_url`` (the runbook's ``curl .../health``): a 2xx answer passes, anything else fails;
* ``pgbouncer``: pool health from the admin console, when ``pgbouncer_admin_url`` is set.

Checks run concurrently; each has a timeout; none raises: a problem becomes a check's reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from actions import humanize
from actions.backup import list_backups
from actions.db import CONNECTION_ERRORS, connection, database_name
from actions.errors import ActionError
from actions.pgbouncer import pool_health
from actions.restore import interrupted_restore
from actions.status import migration_status
from bot.config import Environment
from bot.redact import redact

BACKUP_MAX_AGE = 24 * 3600.0  # seconds; older than this is worth a warning
SLOW_ROUND_TRIP_MS = 500.0
_RANK = {"pass": 0, "warn": 1, "fail": 2}


@dataclass
class Check:
    name: str
    status: str  # "pass" | "warn" | "fail"
    reason: str
    latency_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": redact(self.reason),
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
                "details": self.details}


@dataclass
class HealthReport:
    environment: str
    checks: list[Check]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def verdict(self) -> str:
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default="pass")

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "verdict": self.verdict, "checked_at": self.checked_at.isoformat(),
                "checks": [c.to_dict() for c in self.checks]}


async def check_database(env: Environment, timeout: float = 10.0) -> Check:
    started = time.perf_counter()
    try:
        async with connection(env.database_url, timeout=timeout) as conn:
            connected = time.perf_counter()
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=timeout)
            round_trip = (time.perf_counter() - connected) * 1000
    except ActionError as exc:
        return Check("database", "fail", str(exc))
    except TimeoutError:
        return Check("database", "fail", f"SELECT 1 did not answer within {timeout:g}s: the server is overloaded "
                                         "or a lock blocks it (see migrabot blockers)")
    total = (time.perf_counter() - started) * 1000
    status = "warn" if round_trip > SLOW_ROUND_TRIP_MS else "pass"
    return Check("database", status, f"SELECT 1 answered in {round_trip:.1f} ms (connect + query {total:.0f} ms)",
                 latency_ms=round_trip, details={"connect_and_query_ms": round(total, 1)})


async def check_migrations(env: Environment, timeout: float = 10.0) -> Check:
    try:
        status = await asyncio.wait_for(migration_status(env.migration_url, env.migrations_dir, timeout=timeout),
                                        timeout=timeout + 1)
    except ActionError as exc:
        return Check("migrations", "fail", f"cannot read the migration status: {exc}")
    except TimeoutError:
        return Check("migrations", "fail", f"reading the migration status took more than {timeout:g}s")
    details = {"pending": list(status.pending), "failed": [f.name for f in status.failed],
               "running": [r.to_dict() for r in status.running], "last_applied": status.last_applied}
    if status.failed:
        names = ", ".join(f.name for f in status.failed)
        return Check("migrations", "fail", f"failed migration(s): {names}; resolve them before deploying "
                                           "(see migrabot status)", details=details)
    if status.running:
        running = "; ".join(r.describe() for r in status.running)
        return Check("migrations", "warn", f"being applied right now: {running}", details=details)
    if status.up_to_date:
        return Check("migrations", "pass", f"up to date (last applied: {status.last_applied or 'none'})",
                     details=details)
    parts = []
    for label, which in (("pending", status.pending), ("edited after being applied", status.modified),
                         ("applied but missing locally", status.missing)):
        if which:
            parts.append(f"{len(which)} {label} ({', '.join(which[:3])}{', …' if len(which) > 3 else ''})")
    return Check("migrations", "warn", "; ".join(parts), details=details)


async def check_backup(env: Environment) -> Check:
    try:
        backups = await asyncio.to_thread(list_backups, env.backup_dir, env.name)
    except (ActionError, OSError) as exc:
        return Check("backup", "warn", f"cannot list backups in {env.backup_dir}: {exc}")
    if not backups:
        return Check("backup", "warn", f"no backup of {env.name} in {env.backup_dir} yet: take one "
                                       "(migrabot backup) before the next migration")
    # a backup being taken right now says nothing yet: judge the newest finished one
    newest = next((b for b in backups if getattr(b, "status", "ok") != "running"), backups[0])
    age = (datetime.now(UTC) - newest.created_at).total_seconds()
    details = {"id": newest.id, "age_seconds": round(age), "verified": newest.verified,
               "status": getattr(newest, "status", None)}
    if getattr(newest, "status", "ok") == "failed":
        return Check("backup", "fail", f"the newest backup {newest.id} failed ({humanize.age(age)} ago): take a new "
                                       "one and check the backup log", details=details)
    if age > BACKUP_MAX_AGE:
        return Check("backup", "warn", f"the newest backup {newest.id} is {humanize.age(age)} old", details=details)
    if not newest.verified:
        return Check("backup", "warn", f"the newest backup {newest.id} ({humanize.age(age)} ago) is not verified: "
                                       "run migrabot backup verify", details=details)
    return Check("backup", "pass", f"newest backup {newest.id}, {humanize.age(age)} ago, verified", details=details)


def _get(url: str, timeout: float) -> tuple[int, str]:
    """GET ``url`` (redirects followed), read the whole answer: its status and reason (HTTP errors included)."""
    try:
        # the URL is the operator's setting, checked to be http(s) when the configuration loads
        with urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status, response.reason or ""
    except HTTPError as exc:  # a non-2xx answer is an answer
        exc.read()
        return exc.code, exc.reason or ""


async def check_health_url(url: str, timeout: float = 10.0) -> Check:
    """The runbook's ``curl .../health``: a 2xx answer passes, anything else fails.

    The standard library's client, in a thread: the CLI does not load aiohttp for one GET. The
    whole request (connect, redirects, body) is bounded by ``timeout``.
    """
    started = time.perf_counter()
    try:
        status, reason = await asyncio.wait_for(asyncio.to_thread(_get, url, timeout), timeout)
    except TimeoutError:
        return Check("health_url", "fail", f"{redact(url)} did not answer within {timeout:g}s")
    except (URLError, OSError, ValueError) as exc:
        cause = getattr(exc, "reason", None) or exc
        if isinstance(cause, TimeoutError):
            return Check("health_url", "fail", f"{redact(url)} did not answer within {timeout:g}s")
        reason = redact(str(cause)) or type(cause).__name__
        return Check("health_url", "fail", f"{redact(url)} is unreachable: {reason}")
    latency = (time.perf_counter() - started) * 1000
    if 200 <= status < 300:
        return Check("health_url", "pass", f"{redact(url)} answered {status} in {latency:.0f} ms",
                     latency_ms=latency, details={"status": status})
    return Check("health_url", "fail", f"{redact(url)} answered {status} {reason}".rstrip()
                 + ": check the application's logs", latency_ms=latency, details={"status": status})


async def check_pgbouncer(admin_url: str, database: str | None, timeout: float = 5.0) -> Check:
    started = time.perf_counter()
    health = await pool_health(admin_url, database, timeout=timeout)
    latency = (time.perf_counter() - started) * 1000
    status = {"ok": "pass", "warn": "warn"}.get(health.verdict, "fail")
    return Check("pgbouncer", status, health.reason, latency_ms=latency if status != "fail" else None,
                 details=health.to_dict())


async def health_check(env: Environment, *, timeout: float = 10) -> HealthReport:
    """Run every check that applies to ``env`` (concurrently) and return them with the overall verdict."""
    tasks = {"database": check_database(env, timeout), "migrations": check_migrations(env, timeout),
             "backup": check_backup(env)}
    if env.health_url:
        tasks["health_url"] = check_health_url(env.health_url, timeout)
    if env.pgbouncer_admin_url:
        tasks["pgbouncer"] = check_pgbouncer(env.pgbouncer_admin_url, database_name(env.database_url) or None, timeout)
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    checks: list[Check] = []
    for name, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException):  # a bug in a check must not hide the others
            reason = redact(str(result)) or type(result).__name__
            checks.append(Check(name, "fail", f"the check itself failed: {reason}"))
        else:
            checks.append(result)
    left = await _restore_leftovers(env, timeout)
    if left:  # only when there is something: what a killed restore left behind
        checks.append(Check("restore", "warn", left))
    return HealthReport(env.name, checks)


async def _restore_leftovers(env: Environment, timeout: float) -> str | None:
    try:
        return await asyncio.wait_for(interrupted_restore(env.migration_url, env.name), timeout=timeout)
    except (ActionError, TimeoutError, *CONNECTION_ERRORS):
        return None  # the database check says why the server cannot be asked
