"""Restoring a backup without ever dropping the database before its replacement works.

    >>> result = await restore(env.migration_url, env.backup_dir, "prod", "20240101_120000",
    ...                        confirm="RESTORE", requested_by="U123")          # doctest: +SKIP
    >>> result.previous_database, result.snapshot_id                          # doctest: +SKIP
    ('app__before_restore_20240102093000', '20240102_093000')

The runbook's rollback drops the database and then restores; if the restore fails the
data is gone. Here (``mode="swap"``, the default):

1. the chosen backup is verified (sha256, ``pg_restore --list``) and a safety snapshot of
   the current database is taken (kind ``pre-restore``): data written since the chosen
   backup is never lost;
2. the archive is restored into a new database ``<db>__restore_<ts>`` and checked (it
   connects, has tables, its last Prisma migration is the manifest's);
3. only then the two are swapped by renaming (connections blocked, pgBouncer paused when
   configured, sessions ended): the old one is kept as ``<db>__before_restore_<ts>``.

Any failure before the swap leaves the original untouched and drops the copy; the two renames
of the swap are one transaction, so a failure (or ``kill -9``) during the swap changes no name.
A restore holds an advisory lock (``restore_lock_key``) on the maintenance database while it
runs; a restore killed outright leaves at most a half-restored copy ``<db>__restore_<ts>`` and
the original refusing connections: the next restore, or ``migrabot restore ENV --clean-up``
(:func:`clean_up`), drops the copy and lets connections in again once no restore holds the
lock.

``mode="in-place"`` is the runbook's way (empty the database, restore into it) for roles that
may not create databases; it still takes the safety snapshot first and restores that snapshot
if the restore fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from actions import pgtools
from actions.backup import BackupInfo, backup_problem, get_backup, origin_problem, server_facts, take_backup
from actions.callbacks import call_safely
from actions.db import CONNECTION_ERRORS, connect, connection, database_name, quote_ident, with_database
from actions.errors import ActionError
from actions.faults import fault_point
from actions.pgbouncer import admin_command, admin_query

log = logging.getLogger(__name__)

CONFIRM_WORD = "RESTORE"
MAX_IDENT_BYTES = 63
RESTORE_SUFFIX = "__restore_"
PREVIOUS_SUFFIX = "__before_restore_"
DEFAULT_TIMEOUT = 6 * 3600.0
SQL_TIMEOUT = 30.0

StepCallback = Callable[["RestoreStep"], Any]


@dataclass(frozen=True)
class RestoreStep:
    name: str
    status: str  # "started" | "done" | "failed" | "skipped"
    duration: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "duration": round(self.duration, 3),
                "detail": self.detail}


@dataclass
class RestoreResult:
    backup_id: str
    snapshot_id: str | None
    previous_database: str | None
    mode: str
    steps: list[RestoreStep] = field(default_factory=list)
    duration: float = 0.0
    database: str = ""
    unavailable_seconds: float = 0.0  # how long the database refused connections

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "snapshot_id": self.snapshot_id,
                "previous_database": self.previous_database, "mode": self.mode, "database": self.database,
                "duration": round(self.duration, 3), "unavailable_seconds": round(self.unavailable_seconds, 3),
                "steps": [s.to_dict() for s in self.steps if s.status != "started"]}


class _Steps:
    """Runs named steps, timing them and telling ``on_step`` (sync or async) about each."""

    def __init__(self, on_step: StepCallback | None) -> None:
        self.on_step = on_step
        self.steps: list[RestoreStep] = []

    async def emit(self, step: RestoreStep) -> None:
        self.steps.append(step)
        await call_safely(self.on_step, step, "restore step")  # a Slack hiccup must not break a restore

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[dict[str, str]]:
        """``async with steps.step("restore") as note: note["detail"] = "…"``."""
        note = {"detail": ""}
        start = time.monotonic()
        await self.emit(RestoreStep(name, "started"))
        try:
            yield note
        except BaseException as exc:
            detail = exc.message if isinstance(exc, ActionError) else (str(exc) or type(exc).__name__)
            await self.emit(RestoreStep(name, "failed", time.monotonic() - start, detail))
            raise
        await self.emit(RestoreStep(name, "done", time.monotonic() - start, note["detail"]))

    async def skip(self, name: str, detail: str) -> None:
        await self.emit(RestoreStep(name, "skipped", 0.0, detail))


# --- names --------------------------------------------------------------------------------------------


def fit_name(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's 63-byte identifier limit, cutting the base, keeping the suffix.

    >>> fit_name("a" * 60, "__restore_20240101120000")[-24:]
    '__restore_20240101120000'
    >>> len(fit_name("é" * 40, "__x").encode())
    63
    """
    room = MAX_IDENT_BYTES - len(suffix.encode())
    cut = base.encode()[:room].decode(errors="ignore")
    return cut + suffix


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


# --- connections to the maintenance database ----------------------------------------------------------


async def _admin(url: str) -> asyncpg.Connection:
    """A connection to the server's maintenance database (``postgres``, else ``template1``)."""
    try:
        return await connect(with_database(url, "postgres"))
    except ActionError as first:
        try:
            return await connect(with_database(url, "template1"))
        except ActionError:
            raise first from None


async def _database_exists(admin: asyncpg.Connection, name: str) -> bool:
    return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name, timeout=SQL_TIMEOUT))


async def _terminate(admin: asyncpg.Connection, db: str, *, keep_pid: int | None = None) -> int:
    """End every other session on ``db``; return how many were signalled."""
    return int(await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM $2",
        db, keep_pid, timeout=SQL_TIMEOUT))


@dataclass
class Sessions:
    """The sessions a restore's swap would end on a database, by application."""

    count: int
    by_application: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """``3 sessions (api: 2, worker: 1)`` or ``no other sessions``."""
        if not self.count:
            return "no other sessions"
        apps = ", ".join(f"{app}: {n}" for app, n in sorted(self.by_application.items(), key=lambda x: -x[1]))
        return f"{self.count} session{'s' if self.count != 1 else ''} ({apps})"


async def sessions_on(url: str, *, timeout: float = SQL_TIMEOUT) -> Sessions:
    """Who is connected to the database behind ``url`` now (the swap ends them), by ``application_name``."""
    async with connection(url, timeout=timeout) as conn:
        rows = await conn.fetch(
            "SELECT coalesce(nullif(application_name, ''), '(no application name)') AS app, count(*) AS n "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' GROUP BY 1", timeout=timeout)
    by_app = {str(r["app"]): int(r["n"]) for r in rows}
    return Sessions(count=sum(by_app.values()), by_application=by_app)


async def _set_allow_connections(admin: asyncpg.Connection, db: str, allow: bool) -> None:
    await admin.execute(f"ALTER DATABASE {quote_ident(db)} WITH ALLOW_CONNECTIONS {str(allow).lower()}",
                        timeout=SQL_TIMEOUT)


async def _rename_when_free(admin: asyncpg.Connection, old: str, new: str, *, attempts: int = 50) -> None:
    """Rename ``old`` → ``new``, ending sessions until none is left (termination is asynchronous)."""
    for attempt in range(attempts):
        await _terminate(admin, old)
        try:
            await admin.execute(f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}",
                                timeout=SQL_TIMEOUT)
            return
        except asyncpg.ObjectInUseError:
            if attempt == attempts - 1:
                raise ActionError(f'database "{old}" still has sessions after ending them for '
                                  f"{attempts * 0.1:.0f}s; look at pg_stat_activity for it and retry") from None
            await asyncio.sleep(0.1)


async def _drop_database(url: str, name: str) -> None:
    admin = await _admin(url)
    try:
        await _drop_when_free(admin, name)
    finally:
        await _close(admin)


async def _drop_when_free(admin: asyncpg.Connection, name: str, *, attempts: int = 50) -> None:
    """Drop ``name``, ending its sessions until none is left (termination is asynchronous)."""
    for attempt in range(attempts):
        await _terminate(admin, name)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}", timeout=120)
            return
        except asyncpg.ObjectInUseError:
            if attempt == attempts - 1:
                raise ActionError(f'database "{name}" still has sessions after ending them for {attempts * 0.1:.0f}s; '
                                  "look at pg_stat_activity for it and retry") from None
            await asyncio.sleep(0.1)


# --- copying database-level properties --------------------------------------------------------------


async def _create_like(admin: asyncpg.Connection, source: str, new: str) -> list[str]:
    """Create ``new`` with ``source``'s encoding, locale, owner, settings and grants; return warnings."""
    row = await admin.fetchrow(
        "SELECT to_jsonb(d) AS d, pg_get_userbyid(d.datdba) AS owner, d.oid, current_user AS me "
        "FROM pg_database d WHERE datname = $1", source, timeout=SQL_TIMEOUT)
    if row is None:
        raise ActionError(f'database "{source}" does not exist; check the database name in the URL')
    d = json.loads(row["d"]) if isinstance(row["d"], str) else row["d"]
    enc = await admin.fetchval("SELECT pg_encoding_to_char($1)", d["encoding"], timeout=SQL_TIMEOUT)
    parts = [f"TEMPLATE template0 ENCODING '{enc}'",
             f"LC_COLLATE {_literal(d['datcollate'])} LC_CTYPE {_literal(d['datctype'])}"]
    if d.get("datlocprovider") == "i" and d.get("daticulocale"):
        parts.append(f"LOCALE_PROVIDER icu ICU_LOCALE {_literal(d['daticulocale'])}")
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(new)} " + " ".join(parts), timeout=120)
    except asyncpg.InsufficientPrivilegeError:
        raise ActionError(f'this role may not create databases, so "{new}" cannot be made: grant it '
                          "CREATEDB, or restore in place (`--in-place`, mode=\"in-place\")",
                          code="privilege") from None
    warnings: list[str] = []

    async def best_effort(sql: str, what: str) -> None:
        try:
            await admin.execute(sql, timeout=SQL_TIMEOUT)
        except asyncpg.PostgresError as exc:
            warnings.append(f"could not copy {what}: {exc}")

    if row["owner"] != row["me"]:
        await best_effort(f"ALTER DATABASE {quote_ident(new)} OWNER TO {quote_ident(row['owner'])}", "the owner")
    for setting in await admin.fetch(
            "SELECT pg_get_userbyid(setrole) AS role, setrole, unnest(setconfig) AS kv "
            "FROM pg_db_role_setting WHERE setdatabase = $1", row["oid"], timeout=SQL_TIMEOUT):
        key, _, value = setting["kv"].partition("=")
        target = (f"ALTER DATABASE {quote_ident(new)}" if setting["setrole"] == 0 else
                  f"ALTER ROLE {quote_ident(setting['role'])} IN DATABASE {quote_ident(new)}")
        try:  # stored values are SQL-ish (search_path="$user", public) or plain words needing quotes
            await admin.execute(f"{target} SET {quote_ident(key)} = {value}", timeout=SQL_TIMEOUT)
        except asyncpg.PostgresError:
            await best_effort(f"{target} SET {quote_ident(key)} = {_literal(value)}", f"setting {key}")
    if d.get("datacl"):
        await best_effort(f"REVOKE ALL ON DATABASE {quote_ident(new)} FROM PUBLIC", "grants")
        for acl in await admin.fetch(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END "
                "AS grantee, a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
                "WHERE d.datname = $1", source, timeout=SQL_TIMEOUT):
            option = " WITH GRANT OPTION" if acl["is_grantable"] else ""
            await best_effort(f"GRANT {acl['privilege_type']} ON DATABASE {quote_ident(new)} TO "
                              f"{acl['grantee']}{option}", f"the grant to {acl['grantee']}")
    return warnings


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- pg_restore ---------------------------------------------------------------------------------------


_HEADER_LINE = re.compile(rb"^(?:SET \w+ = .*;|SELECT pg_catalog\.set_config\(.*;|--.*|\\(?:un)?restrict .*|)$")
_SET_LINE = re.compile(rb"^SET (\w+) = .*;$")


async def _pg_restore(url: str, dbname: str, info: BackupInfo, *, jobs: int, timeout: float,
                      tool_dirs: Sequence[Path] | None) -> str:
    """Restore ``info``'s archive into ``dbname``; return how it was done."""
    facts_major = int(await _server_major(url))
    dump_major = int((info.manifest.get("pg_dump") or {}).get("major") or facts_major)
    tool = await asyncio.to_thread(pgtools.find_pg_tool, "pg_restore", max(facts_major, dump_major),
                                   search_dirs=tool_dirs)
    conninfo, env = pgtools.libpq_args(url)
    target = pgtools.with_dbname(conninfo, dbname)
    if tool.major <= facts_major:
        args: list[str | Path] = [tool.path, "--exit-on-error", "--no-owner", "--no-password", "-d", target]
        if jobs > 1:
            args += ["-j", str(jobs)]
        await pgtools.run_tool([*args, info.dump_path], env, timeout=timeout, what="pg_restore")
        return f"pg_restore {tool.major}" + (f" with {jobs} jobs" if jobs > 1 else "")
    # A newer pg_restore sets parameters an older server rejects (pg_restore 17+ sends
    # "SET transaction_timeout = 0" to a 15 server). Have it write SQL, drop those settings
    # from the header, and feed the rest to psql (of the same folder) that stops on the first error.
    known = await _server_settings(url)
    psql = tool.path.parent / "psql"
    if not psql.exists():
        raise ActionError(f"restoring a pg_dump {dump_major} archive into a {facts_major} server needs psql "
                          f"next to {tool.path}; install postgresql-client-{dump_major}")
    await _restore_through_psql(tool.path, psql, info.dump_path, target, env, known, timeout=timeout)
    return f"pg_restore {tool.major} through psql (settings unknown to server {facts_major} removed)"


async def _server_major(url: str) -> int:
    async with connection(url) as conn:
        return int(await conn.fetchval("SHOW server_version_num", timeout=SQL_TIMEOUT)) // 10000


async def _server_settings(url: str) -> set[bytes]:
    async with connection(url) as conn:
        return {r["name"].encode() for r in await conn.fetch("SELECT name FROM pg_settings", timeout=SQL_TIMEOUT)}


async def _restore_through_psql(pg_restore: Path, psql: Path, dump: Path, target: str, env: dict[str, str],
                                known: set[bytes], *, timeout: float) -> None:
    producer = await asyncio.create_subprocess_exec(
        str(pg_restore), "--no-owner", "-f", "-", str(dump), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    consumer = await asyncio.create_subprocess_exec(
        str(psql), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "-",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)

    async def pump() -> None:
        # Only the header (settings before the first statement) is filtered: COPY data passes
        # untouched, so a row that happens to look like "SET x = y;" can never be altered.
        assert producer.stdout is not None and consumer.stdin is not None
        in_header, pending = True, b""
        try:
            while chunk := await producer.stdout.read(1 << 20):
                if in_header:
                    pending += chunk
                    lines = pending.split(b"\n")
                    pending = lines.pop()
                    out = []
                    for i, line in enumerate(lines):
                        if not _HEADER_LINE.match(line):
                            in_header = False
                            out += lines[i:]
                            break
                        m = _SET_LINE.match(line)
                        if m is None or m.group(1) in known:
                            out.append(line)
                    chunk = b"\n".join(out) + b"\n" if out else b""
                    if not in_header:
                        chunk += pending
                        pending = b""
                consumer.stdin.write(chunk)
                await consumer.stdin.drain()
            consumer.stdin.write(pending)
            await consumer.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # psql stopped on an error: its stderr says why
        finally:
            consumer.stdin.close()

    try:
        results = await asyncio.wait_for(asyncio.gather(
            pump(), producer.stderr.read(), consumer.stderr.read(),  # type: ignore[union-attr]
            producer.wait(), consumer.wait()), timeout=timeout)
    except TimeoutError:
        raise ActionError(f"the restore did not finish within {timeout:g}s and was stopped", code="timeout") from None
    finally:
        await pgtools.kill(producer)
        await pgtools.kill(consumer)
    _, restore_err, psql_err, _, _ = results
    if consumer.returncode != 0:
        raise ActionError(f"psql failed while restoring: {pgtools.trim(psql_err.decode(errors='replace'))}")
    if producer.returncode != 0:
        raise ActionError(f"pg_restore failed: {pgtools.trim(restore_err.decode(errors='replace'))}")


# --- checks ------------------------------------------------------------------------------------------


async def _verify_restored(url: str, info: BackupInfo) -> str:
    """Check the restored database against the manifest; return a summary or raise ActionError."""
    facts = await server_facts(url)
    expected = info.manifest.get("last_migration")
    if expected and facts.last_migration != expected:
        raise ActionError(f"the restored database's last migration is {facts.last_migration or 'none'}, but "
                          f"backup {info.id} was taken at {expected}; the archive is incomplete")
    if int(info.manifest.get("table_count") or 0) > 0 and facts.table_count == 0:
        raise ActionError(f"the restored database has no tables although backup {info.id} had "
                          f"{info.manifest.get('table_count')}; the archive is incomplete")
    return f"{facts.table_count} tables, last migration {facts.last_migration or 'none'}"


def _default_jobs(jobs: int) -> int:
    return jobs if jobs > 0 else max(1, min(4, os.cpu_count() or 1))


# --- the restore -------------------------------------------------------------------------------------


async def restore(url: str, backup_dir: Path, env_name: str, backup_id: str, *, confirm: str,
                  mode: str = "swap", snapshot: bool = True, pgbouncer_admin_url: str | None = None,
                  requested_by: str = "cli", jobs: int = 0, on_step: StepCallback | None = None,
                  pgbouncer_database: str | None = None, tool_dirs: Sequence[Path] | None = None,
                  timeout: float = DEFAULT_TIMEOUT, allow_other_origin: bool = False) -> RestoreResult:
    """Restore backup ``backup_id`` of ``env_name`` into the database behind ``url``.

    ``confirm`` must be exactly ``"RESTORE"`` (the runbook's confirmation word). ``jobs``:
    pg_restore workers (0 = up to 4, by CPU count). ``pgbouncer_database`` is the database's
    name in pgBouncer when it differs from the real one. A backup whose manifest names another
    environment, database or server (or that has none) is refused unless ``allow_other_origin``.
    """
    if confirm != CONFIRM_WORD:
        raise ActionError(f'restore not confirmed: type {CONFIRM_WORD} exactly (capital letters, nothing '
                          f"else) to replace {env_name}'s database with backup {backup_id}", code="confirm")
    if mode not in ("swap", "in-place"):
        raise ActionError(f'unknown restore mode "{mode}" (expected "swap" or "in-place")')
    if mode == "in-place" and not snapshot:
        raise ActionError("an in-place restore empties the database before restoring, so it needs the safety "
                          "snapshot; drop --no-snapshot (or use the default swap mode)")
    if pgbouncer_admin_url:  # fail now, not half-way through the swap

        try:
            await admin_query(pgbouncer_admin_url, "SHOW VERSION", timeout=SQL_TIMEOUT)
        except ActionError as exc:
            raise ActionError(f"{exc.message}; the restore needs pgBouncer's console to pause the pool during "
                              "the swap, so nothing was changed", code="pgbouncer") from None
    started = time.monotonic()
    steps = _Steps(on_step)
    db = database_name(url)
    info = get_backup(backup_dir, env_name, backup_id)
    origin = origin_problem(info, env_name, url)
    if origin and not allow_other_origin:
        raise ActionError(f"{origin}; nothing was changed. Restore it only if you mean to put that data into "
                          f"{env_name}, and say so explicitly", code="other_origin")
    result = RestoreResult(info.id, None, None, mode, steps.steps, database=db)

    async with steps.step("verify backup") as note:
        problem = await backup_problem(info, tool_dirs=tool_dirs)
        if problem:
            raise ActionError(f"{problem}; nothing was changed. Pick another backup (`migrabot backups {env_name}`)")
        note["detail"] = f"{info.id}: checksums and archive table of contents are fine"

    guard = await _admin(url)
    try:
        await _take_restore_lock(guard, db, env_name)
        leftovers = await _clean_up_on(guard, db, env_name)
        if leftovers:
            async with steps.step("clean up an interrupted restore") as note:
                note["detail"] = "; ".join(leftovers)
        await _restore_steps(url, backup_dir, env_name, db, info, result, steps, mode=mode, snapshot=snapshot,
                             pgbouncer_admin_url=pgbouncer_admin_url, requested_by=requested_by, jobs=jobs,
                             pgbouncer_database=pgbouncer_database, tool_dirs=tool_dirs, timeout=timeout)
    except CONNECTION_ERRORS as exc:  # a query of ours (not a step's own) lost the server
        raise ActionError(await _lost_during_restore(url, db, env_name, exc, result),
                          code="connection_lost") from None
    finally:
        await _close(guard)  # ends the session, and with it the restore lock
    result.duration = time.monotonic() - started
    return result


async def _restore_steps(url: str, backup_dir: Path, env_name: str, db: str, info: BackupInfo,
                         result: RestoreResult, steps: _Steps, *, mode: str, snapshot: bool,
                         pgbouncer_admin_url: str | None, requested_by: str, jobs: int,
                         pgbouncer_database: str | None, tool_dirs: Sequence[Path] | None,
                         timeout: float) -> None:
    if snapshot:
        async with steps.step("safety snapshot") as note:
            fault_point("restore.snapshot")
            try:
                snap = await take_backup(url, backup_dir, env_name, reason=f"before restore of {info.id}",
                                         requested_by=requested_by, kind="pre-restore", tool_dirs=tool_dirs)
            except ActionError as exc:
                raise ActionError(f"the safety snapshot failed ({exc.message}); nothing was restored and {db} was "
                                  "not changed: retry the restore when the cause is fixed", code=exc.code) from None
            result.snapshot_id = snap.id
            note["detail"] = f"current data saved as backup {snap.id}"
    else:
        await steps.skip("safety snapshot", "skipped on request (--no-snapshot)")

    if mode == "swap":
        await _restore_swap(url, db, info, result, steps, jobs=_default_jobs(jobs),
                            pgbouncer_admin_url=pgbouncer_admin_url, pgbouncer_db=pgbouncer_database or db,
                            tool_dirs=tool_dirs, timeout=timeout, env_name=env_name)
    else:
        await _restore_in_place(url, db, info, result, steps, jobs=_default_jobs(jobs),
                                pgbouncer_admin_url=pgbouncer_admin_url, pgbouncer_db=pgbouncer_database or db,
                                tool_dirs=tool_dirs, timeout=timeout, backup_dir=backup_dir, env_name=env_name)

    async with steps.step("verify connectivity") as note:
        try:
            async with connection(url) as conn:
                current = await conn.fetchval("SELECT current_database()", timeout=SQL_TIMEOUT)
        except (ActionError, *CONNECTION_ERRORS) as exc:
            reason = exc.message if isinstance(exc, ActionError) else (str(exc) or type(exc).__name__)
            raise ActionError(f"the restore of {info.id} is done (the database {db} holds it), but connecting to it "
                              f"afterwards failed ({reason}): check the server with `migrabot health {env_name}`",
                              code="connection_lost") from None
        note["detail"] = f"connected to {current} through the normal URL"


# --- one restore at a time, and what an interrupted one left ----------------------------------------------

RESTORE_LOCK_CLASS = 0x6D627273  # "mbrs": the first key of the advisory lock a restore holds


def restore_lock_key(db: str) -> int:
    """The second key of the advisory lock a restore of ``db`` holds on the maintenance database.

    >>> restore_lock_key("prod") == restore_lock_key("prod") != restore_lock_key("staging")
    True
    """
    return zlib.crc32(db.encode()) & 0x7FFFFFFF


async def _take_restore_lock(admin: asyncpg.Connection, db: str, env_name: str) -> None:
    key = restore_lock_key(db)
    if await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", RESTORE_LOCK_CLASS, key, timeout=SQL_TIMEOUT):
        return
    pid = await _restore_lock_holder(admin, db)
    raise ActionError(f"another restore of {db} is running (server pid {pid or 'unknown'}); nothing was changed: "
                      f"wait for it to end, then check `migrabot backups {env_name}` and retry", code="busy")


async def _restore_lock_holder(admin: asyncpg.Connection, db: str) -> int | None:
    pid = await admin.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid "
        "AND objid = $2::bigint::oid AND objsubid = 2 AND pid <> pg_backend_pid() LIMIT 1",
        RESTORE_LOCK_CLASS, restore_lock_key(db), timeout=SQL_TIMEOUT)
    return int(pid) if pid else None


async def _clean_up_on(admin: asyncpg.Connection, db: str, env_name: str) -> list[str]:
    """With the restore lock held: drop half-restored copies, let connections into ``db`` again; say what."""
    done: list[str] = []
    names = [r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database", timeout=SQL_TIMEOUT)]
    for copy in _half_restored(db, names):
        await _drop_when_free(admin, copy)
        done.append(f"dropped {copy}, a copy an interrupted restore was filling")
    allowed = await admin.fetchval("SELECT datallowconn FROM pg_database WHERE datname = $1", db,
                                   timeout=SQL_TIMEOUT)
    if allowed is False:
        await _set_allow_connections(admin, db, True)
        done.append(f"{db} accepts connections again (an interrupted restore's swap had blocked them)")
    elif allowed is None:
        kept = [n for n in names if n in _previous(db, names)]
        raise ActionError(f"database {db} does not exist; nothing was changed. "
                          + (f"Databases kept by earlier restores: {', '.join(sorted(kept, reverse=True))} (the newest "
                             f"holds the data from before the last restore): rename the right one to {db} by hand"
                             if kept else "Create it, or fix the database name in the configuration"),
                          code="missing")
    return done


def _half_restored(db: str, names: list[str]) -> list[str]:
    prefix = fit_name(db, RESTORE_SUFFIX + "0" * 14)[: -14]
    return sorted((n for n in names if n.startswith(prefix) and re.fullmatch(r"\d{14}", n[len(prefix):])),
                  reverse=True)


def _previous(db: str, names: list[str]) -> list[str]:
    prefix = _previous_prefix(db)
    return sorted((n for n in names if n.startswith(prefix) and re.fullmatch(r"\d{14}", n[len(prefix):])),
                  reverse=True)


async def clean_up(url: str, env_name: str = "ENV") -> list[str]:
    """What a restore killed outright left (``migrabot restore ENV --clean-up``): drop it; say what was done.

    Refuses while a restore of the database runs (it holds the restore lock). Databases kept on
    purpose by finished restores stay (``drop_previous`` drops them); they are named.
    """
    db = database_name(url)
    admin = await _admin(url)
    try:
        await _take_restore_lock(admin, db, env_name)
        done = await _clean_up_on(admin, db, env_name)
        names = [r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database", timeout=SQL_TIMEOUT)]
        kept = _previous(db, names)
    finally:
        await _close(admin)
    if kept:
        done.append(f"kept by earlier restores (drop them with `migrabot restore {env_name} --drop-previous`): "
                    + ", ".join(kept))
    return done


async def interrupted_restore(url: str, env_name: str = "ENV") -> str | None:
    """What an interrupted restore left of the database behind ``url`` (``migrabot health``), or None.

    A copy ``<db>__restore_<ts>`` while no restore holds the lock, or the database refusing
    connections: named, with the command that removes it. A restore running now is not a leftover.
    """
    db = database_name(url)
    admin = await _admin(url)
    try:
        rows = await admin.fetch("SELECT datname, datallowconn FROM pg_database", timeout=SQL_TIMEOUT)
        allow = {r["datname"]: r["datallowconn"] for r in rows}
        copies = _half_restored(db, list(allow))
        if not copies and allow.get(db) is not False:
            return None
        running = await _restore_lock_holder(admin, db)
    finally:
        await _close(admin)
    if running:
        return None
    parts = ([f"copies an interrupted restore was filling: {', '.join(copies)}"] if copies else []) + (
        [f"{db} refuses connections (an interrupted restore's swap blocked them)"] if allow.get(db) is False else [])
    return "; ".join(parts) + f": `migrabot restore {env_name} --clean-up` removes this"


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:  # a connection the server already ended: nothing to close politely
        conn.terminate()


async def _lost_during_restore(url: str, db: str, env_name: str, exc: BaseException, result: RestoreResult) -> str:
    """One sentence for a lost connection: what happened, what the server holds now, what to do."""
    reason = " ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
    return (f"lost the database connection during the restore of {result.backup_id} into {db} ({reason}); "
            f"{await describe_server_state(url, db, env_name)}")


async def describe_server_state(url: str, db: str, env_name: str) -> str:
    """What the server holds of ``db`` now and the command that settles it (best effort, one sentence)."""
    try:
        admin = await _admin(url)
    except ActionError as exc:
        return (f"the server cannot be reached now ({exc.message}): when it is back, run `migrabot restore {env_name} "
                "--clean-up`, which says what an interrupted restore left and removes it")
    try:
        rows = await admin.fetch("SELECT datname, datallowconn FROM pg_database", timeout=SQL_TIMEOUT)
    except CONNECTION_ERRORS:
        return f"run `migrabot restore {env_name} --clean-up` when the server answers again"
    finally:
        await _close(admin)
    allow = {r["datname"]: r["datallowconn"] for r in rows}
    parts = [f"{db} is there and unchanged" if allow.get(db) else
             f"{db} is there but refuses connections" if db in allow else f"{db} DOES NOT EXIST"]
    copies = _half_restored(db, list(allow))
    if copies:
        parts.append(f"half-restored copy left: {', '.join(copies)}")
    if copies or allow.get(db) is False:
        parts.append(f"run `migrabot restore {env_name} --clean-up` to drop the copy and let connections in")
    return "; ".join(parts)


async def _pgbouncer(admin_url: str | None, command: str) -> None:
    if admin_url:
        await admin_command(admin_url, command, timeout=SQL_TIMEOUT)


async def _restore_swap(url: str, db: str, info: BackupInfo, result: RestoreResult, steps: _Steps, *,
                        jobs: int, pgbouncer_admin_url: str | None, pgbouncer_db: str,
                        tool_dirs: Sequence[Path] | None, timeout: float, env_name: str) -> None:
    stamp = _stamp(datetime.now(UTC))
    new, previous = fit_name(db, RESTORE_SUFFIX + stamp), fit_name(db, PREVIOUS_SUFFIX + stamp)
    admin = await _admin(url)
    created = False
    try:
        for name in (new, previous):
            if await _database_exists(admin, name):
                raise ActionError(f'database "{name}" already exists (another restore this second?); '
                                  "wait a second and retry")
        try:
            async with steps.step("restore") as note:
                warnings = await _create_like(admin, db, new)
                created = True
                fault_point("restore.pg_restore")
                how = await _pg_restore(url, new, info, jobs=jobs, timeout=timeout, tool_dirs=tool_dirs)
                note["detail"] = f"into {new} ({how})" + "".join(f"; {w}" for w in warnings)
            async with steps.step("verify restored database") as note:
                fault_point("restore.verify")
                note["detail"] = await _verify_restored(with_database(url, new), info)
        except BaseException as exc:
            # nothing has touched the original: drop the half-restored copy and stop
            dropped = await _cleanup_copy(url, new) if created else None
            copy = ("" if not created else "the partial copy was dropped" if dropped is None else
                    f"the partial copy {new} could not be dropped ({dropped}): run `migrabot restore {env_name} "
                    "--clean-up` when the server answers")
            if isinstance(exc, ActionError) or isinstance(exc, CONNECTION_ERRORS):
                raise ActionError(_before_swap_failure(exc, db, info, copy), code=_code(exc)) from None
            raise
        async with steps.step("swap") as note:
            t0 = time.monotonic()
            await _swap(admin, url, db, new, previous, pgbouncer_admin_url, pgbouncer_db, env_name)
            result.unavailable_seconds = time.monotonic() - t0
            result.previous_database = previous
            note["detail"] = f"{new} is now {db}; the previous database is kept as {previous}"
    finally:
        await _close(admin)


_LOST_WORDS = ("terminating connection", "server closed the connection", "connection to server",
               "could not connect", "connection is closed", "connection was closed", "no connection to the server")


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` (ours, asyncpg's, or a client program's error text) is a lost connection."""
    if isinstance(exc, ActionError):
        return exc.code == "connection_lost" or any(w in exc.message for w in _LOST_WORDS)
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "").startswith(("08", "57P"))
    return isinstance(exc, asyncpg.InterfaceError | OSError | ConnectionError)


def _code(exc: BaseException) -> str | None:
    if _lost(exc):
        return "connection_lost"
    return exc.code if isinstance(exc, ActionError) else None


def _before_swap_failure(exc: BaseException, db: str, info: BackupInfo, copy: str) -> str:
    """The sentence for a failure while filling or checking the copy: the original was never touched."""
    reason = exc.message if isinstance(exc, ActionError) else " ".join((str(exc) or type(exc).__name__).split())
    tail = f" and {copy}" if copy else ""
    if _lost(exc):
        return (f"lost the database connection while restoring {info.id} into a copy ({reason}); {db} was not "
                f"changed{tail}. The archive is not at fault: retry the restore when the server is healthy")
    damaged = isinstance(exc, ActionError) and exc.code not in ("privilege", "timeout")
    hint = f" (the archive of {info.id} may be damaged: try another backup)" if damaged else ""
    return f"{reason}; {db} was not changed{tail}{hint}"


async def _cleanup_copy(url: str, name: str) -> str | None:
    """Drop a half-restored copy; None when it is gone, else why it could not be dropped (no traceback)."""
    try:
        await asyncio.shield(_drop_database(url, name))
    except (Exception, asyncio.CancelledError) as exc:
        log.debug("could not drop the half-restored copy %s", name, exc_info=True)
        return exc.message if isinstance(exc, ActionError) else (str(exc) or type(exc).__name__)
    return None


async def _swap(admin: asyncpg.Connection, url: str, db: str, new: str, previous: str,
                pgbouncer_admin_url: str | None, pgbouncer_db: str, env_name: str = "ENV") -> None:
    """Rename ``db`` → ``previous`` and ``new`` → ``db`` in one transaction; on any failure put everything back.

    One transaction: a failure, a lost connection or ``kill -9`` between the two renames changes
    no name (the server rolls back). The undo looks at which databases exist rather than
    trusting flags: a COMMIT may have happened on the server even when its answer was lost.
    """
    paused = False
    try:
        if pgbouncer_admin_url:
            paused = True  # before the call: a PAUSE that times out may still be in force
            await _pgbouncer(pgbouncer_admin_url, f"PAUSE {pgbouncer_db}")
        await _set_allow_connections(admin, db, False)
        await _renames_when_free(admin, db, new, previous)
    except BaseException as exc:
        problems = await asyncio.shield(_undo_swap(url, db, new, previous, paused=paused,
                                                   pgbouncer_admin_url=pgbouncer_admin_url,
                                                   pgbouncer_db=pgbouncer_db, env_name=env_name))
        reason = exc.message if isinstance(exc, ActionError) else (" ".join(str(exc).split()) or type(exc).__name__)
        what = "the swap lost the database connection" if _lost(exc) else "the swap failed"
        if problems:
            raise ActionError(f"{what} ({reason}) and putting the original back failed too: "
                              + "; ".join(problems), code=_code(exc)) from None
        if await _swapped(url, db, previous):  # the COMMIT went through; only its answer was lost
            await _after_swap(url, previous, paused, pgbouncer_admin_url, pgbouncer_db)
            return
        dropped = await _cleanup_copy(url, new)
        copy = ("the restored copy was dropped" if dropped is None else
                f"the restored copy {new} could not be dropped ({dropped}): run `migrabot restore {env_name} "
                "--clean-up`")
        if isinstance(exc, Exception):
            raise ActionError(f"{what} ({reason}); the original database is back in place and unchanged, and "
                              f"{copy}", code=_code(exc)) from None
        raise
    await _after_swap(url, previous, paused, pgbouncer_admin_url, pgbouncer_db)


async def _after_swap(url: str, previous: str, paused: bool, pgbouncer_admin_url: str | None,
                      pgbouncer_db: str) -> None:
    """The swap is done: the previous database stays readable (for comparison); pgBouncer resumes."""
    try:
        admin = await _admin(url)
        try:
            await _set_allow_connections(admin, previous, True)
        finally:
            await _close(admin)
    except (ActionError, *CONNECTION_ERRORS):
        log.warning("could not re-allow connections to %s (only needed to read it)", previous)
    if paused:
        try:
            await _pgbouncer(pgbouncer_admin_url, f"RESUME {pgbouncer_db}")
        except ActionError as exc:
            raise ActionError(f"the restore is done but pgBouncer is still paused ({exc.message}): run "
                              f"`RESUME {pgbouncer_db};` on its admin console now") from None


async def _renames_when_free(admin: asyncpg.Connection, db: str, new: str, previous: str, *,
                             attempts: int = 50) -> None:
    """Both renames in one transaction, ending ``db``'s sessions until none is left (termination is asynchronous)."""
    for attempt in range(attempts):
        await _terminate(admin, db)
        try:
            async with admin.transaction():
                await admin.execute(f"ALTER DATABASE {quote_ident(db)} RENAME TO {quote_ident(previous)}",
                                    timeout=SQL_TIMEOUT)
                fault_point("restore.swap")
                await admin.execute(f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(db)}",
                                    timeout=SQL_TIMEOUT)
            return
        except asyncpg.ObjectInUseError as exc:
            if f'"{db}"' not in str(exc) or attempt == attempts - 1:
                raise ActionError(f"{exc} (sessions kept connecting for {attempts * 0.1:.0f}s); look at "
                                  "pg_stat_activity and retry") from None
            await asyncio.sleep(0.1)


async def _swapped(url: str, db: str, previous: str) -> bool:
    """After a lost answer: whether the swap's transaction committed (``previous`` exists)."""
    try:
        admin = await _admin(url)
    except ActionError:
        return False
    try:
        return await _database_exists(admin, previous) and await _database_exists(admin, db)
    except CONNECTION_ERRORS:
        return False
    finally:
        await _close(admin)


async def _undo_swap(url: str, db: str, new: str, previous: str, *, paused: bool,
                     pgbouncer_admin_url: str | None, pgbouncer_db: str, env_name: str = "ENV") -> list[str]:
    """Put the original back under ``db``, connectable, on a fresh connection; return what failed.

    The renames were one transaction, so normally only the connection block (and pgBouncer's
    pause) is left to lift; a COMMIT whose answer was lost left the swap done, which stays.
    """
    manual = (f"run `migrabot restore {env_name} --clean-up` when the server answers (it lets connections into "
              f"{db} again and drops the copy {new})" + (f"; and RESUME {pgbouncer_db} on pgBouncer" if paused else ""))
    problems: list[str] = []
    try:
        admin = await _admin(url)
    except ActionError as exc:
        return [f"cannot reconnect to undo ({exc.message}); {manual}"]
    try:
        fault_point("restore.undo")
        try:
            if await _database_exists(admin, previous) and not await _database_exists(admin, db):
                await _rename_when_free(admin, previous, db)  # a swap by an older version, stopped half-way
            await _set_allow_connections(admin, db, True)
        except (*CONNECTION_ERRORS, ActionError) as exc:
            problems.append(f"{' '.join(str(exc).split())}; {manual}")
        if paused:
            try:
                await _pgbouncer(pgbouncer_admin_url, f"RESUME {pgbouncer_db}")
            except ActionError as exc:
                problems.append(f"RESUME {pgbouncer_db} failed ({exc.message}); run it on pgBouncer's console")
    finally:
        await _close(admin)
    return problems


# --- in place (the runbook's way) --------------------------------------------------------------------------


_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


async def _empty_database(conn: asyncpg.Connection) -> int:
    """Drop every user schema (and recreate ``public``) in one transaction; return how many were dropped."""
    rows = await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname <> ALL($1::text[]) "
        "AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'",
        list(_SYSTEM_SCHEMAS), timeout=SQL_TIMEOUT)
    async with conn.transaction():
        for r in rows:
            await conn.execute(f"DROP SCHEMA {quote_ident(r['nspname'])} CASCADE", timeout=600)
        await conn.execute("CREATE SCHEMA public", timeout=SQL_TIMEOUT)
    # PostgreSQL 15's default for public; older servers' default (CREATE for all) is not restored
    for sql in ("ALTER SCHEMA public OWNER TO pg_database_owner", "GRANT USAGE ON SCHEMA public TO PUBLIC"):
        try:
            await conn.execute(sql, timeout=SQL_TIMEOUT)
        except asyncpg.PostgresError:
            pass
    return len(rows)


async def _restore_in_place(url: str, db: str, info: BackupInfo, result: RestoreResult, steps: _Steps, *,
                            jobs: int, pgbouncer_admin_url: str | None, pgbouncer_db: str,
                            tool_dirs: Sequence[Path] | None, timeout: float, backup_dir: Path,
                            env_name: str) -> None:
    admin = await _admin(url)
    work = await connect(url)
    paused = blocked = False
    t0 = time.monotonic()
    try:
        async with steps.step("empty database") as note:
            if pgbouncer_admin_url:
                await _pgbouncer(pgbouncer_admin_url, f"PAUSE {pgbouncer_db}")
                paused = True
            await _set_allow_connections(admin, db, False)
            blocked = True
            ended = await _terminate(admin, db, keep_pid=work.get_server_pid())
            dropped = await _empty_database(work)
            await _set_allow_connections(admin, db, True)
            blocked = False
            note["detail"] = f"ended {ended} session(s), dropped {dropped} schema(s)"
        try:
            async with steps.step("restore") as note:
                note["detail"] = await _pg_restore(url, db, info, jobs=jobs, timeout=timeout, tool_dirs=tool_dirs)
            async with steps.step("verify restored database") as note:
                note["detail"] = await _verify_restored(url, info)
        except Exception as exc:
            reason = exc.message if isinstance(exc, ActionError) else str(exc)
            await _recover_from_snapshot(url, db, work, result, steps, backup_dir, env_name, jobs,
                                         tool_dirs, timeout, reason)
            raise ActionError(f"the in-place restore of {info.id} failed ({reason}); the database was "
                              f"restored from the safety snapshot {result.snapshot_id}") from None
    finally:
        if blocked:
            try:
                await _set_allow_connections(admin, db, True)
            except asyncpg.PostgresError:
                log.error("could not re-allow connections to %s", db, exc_info=True)
        if paused:
            await _pgbouncer(pgbouncer_admin_url, f"RESUME {pgbouncer_db}")
        result.unavailable_seconds = time.monotonic() - t0
        await work.close()
        await admin.close()


async def _recover_from_snapshot(url: str, db: str, work: asyncpg.Connection, result: RestoreResult,
                                 steps: _Steps, backup_dir: Path, env_name: str, jobs: int,
                                 tool_dirs: Sequence[Path] | None, timeout: float, reason: str) -> None:
    async with steps.step("restore safety snapshot") as note:
        try:
            snap = get_backup(backup_dir, env_name, str(result.snapshot_id))
            await _empty_database(work)
            await _pg_restore(url, db, snap, jobs=jobs, timeout=timeout, tool_dirs=tool_dirs)
        except Exception as exc:
            why = exc.message if isinstance(exc, ActionError) else str(exc)
            raise ActionError(f"the in-place restore failed ({reason}) AND restoring the safety snapshot "
                              f"{result.snapshot_id} failed ({why}): restore it now with `migrabot restore "
                              f"{env_name} {result.snapshot_id} --confirm RESTORE`") from None
        note["detail"] = f"back to the state of {snap.id}"


# --- kept previous databases ----------------------------------------------------------------------------


def _previous_prefix(db: str) -> str:
    return fit_name(db, PREVIOUS_SUFFIX + "0" * 14)[: -14]


async def list_previous_databases(url: str) -> list[str]:
    """The databases earlier restores kept (``<db>__before_restore_<ts>``), newest first."""
    admin = await _admin(url)
    try:
        prefix = _previous_prefix(database_name(url))
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname DESC",
            prefix, timeout=SQL_TIMEOUT)
    finally:
        await admin.close()
    return [r["datname"] for r in rows if re.fullmatch(r"\d{14}", r["datname"][len(prefix):])]


@dataclass
class ServerDatabases:
    """What a server holds of one database after an interrupted restore."""

    database: str
    exists: bool
    previous: list[str]  # kept by restores: <db>__before_restore_<ts>
    half_restored: list[str]  # copies a restore was filling: <db>__restore_<ts>


async def server_databases(url: str) -> ServerDatabases:
    """The database, the copies earlier restores kept, and copies a restore left half-way (newest first)."""
    db = database_name(url)
    admin = await _admin(url)
    try:
        names = [r["datname"] for r in await admin.fetch(
            "SELECT datname FROM pg_database ORDER BY datname DESC", timeout=SQL_TIMEOUT)]
    finally:
        await admin.close()
    stamped = re.compile(r"\d{14}")
    previous_prefix = _previous_prefix(db)
    restore_prefix = fit_name(db, RESTORE_SUFFIX + "0" * 14)[: -14]
    return ServerDatabases(
        database=db, exists=db in names,
        previous=[n for n in names if n.startswith(previous_prefix) and stamped.fullmatch(n[len(previous_prefix):])],
        half_restored=[n for n in names if n.startswith(restore_prefix)
                       and stamped.fullmatch(n[len(restore_prefix):])])


async def drop_previous(url: str, name: str | None = None) -> list[str]:
    """Drop one kept previous database (``name``) or all of them; return the dropped names."""
    kept = await list_previous_databases(url)
    if name is not None and name not in kept:
        listing = ", ".join(kept) or "none"
        raise ActionError(f'"{name}" is not a database kept by a restore of {database_name(url)} '
                          f"(kept: {listing}); nothing was dropped")
    targets = [name] if name is not None else kept
    admin = await _admin(url)
    dropped: list[str] = []
    try:
        for target in targets:
            try:
                await admin.execute(f"DROP DATABASE {quote_ident(target)}", timeout=120)
            except asyncpg.ObjectInUseError:
                raise ActionError(f'"{target}" is in use; close the sessions connected to it and retry '
                                  f"(dropped so far: {', '.join(dropped) or 'none'})") from None
            dropped.append(target)
    finally:
        await admin.close()
    return dropped


# --- restoring into a new database beside the original (rehearsals) ------------------------------------


async def restore_into_new_database(url: str, name: str, info: BackupInfo, *, like: str | None = None,
                                    jobs: int = 0, tool_dirs: Sequence[Path] | None = None,
                                    timeout: float = DEFAULT_TIMEOUT) -> str:
    """Create ``name`` on the server behind ``url``, restore ``info`` into it and verify it as a restore does.

    ``like``: a database on that server whose encoding, locale, owner and settings the new one copies
    (without it: ``TEMPLATE template0`` and the server's defaults). Returns what was done; on any
    failure the new database is dropped and the error raised. Nothing else on the server is touched.
    """
    admin = await _admin(url)
    created = False
    try:
        if await _database_exists(admin, name):
            raise ActionError(f'database "{name}" already exists; wait a second and retry')
        if like is not None:
            warnings = await _create_like(admin, like, name)
        else:
            await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0", timeout=120)
            warnings = []
        created = True
        how = await _pg_restore(url, name, info, jobs=_default_jobs(jobs), timeout=timeout, tool_dirs=tool_dirs)
        verified = await _verify_restored(with_database(url, name), info)
    except BaseException:
        if created:
            await _cleanup_copy(url, name)
        raise
    finally:
        await admin.close()
    return "; ".join([how, verified, *warnings])
