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

Any failure before the swap leaves the original untouched and drops the copy; a failure
during the swap renames everything back. ``mode="in-place"`` is the runbook's way (empty
the database, restore into it) for roles that may not create databases; it still takes
the safety snapshot first and restores that snapshot if the restore fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from actions import pgtools
from actions.backup import BackupInfo, backup_problem, get_backup, server_facts, take_backup
from actions.callbacks import call_safely
from actions.db import connect, connection, database_name, quote_ident, with_database
from actions.errors import ActionError
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
        await _terminate(admin, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}", timeout=120)
    finally:
        await admin.close()


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
                  timeout: float = DEFAULT_TIMEOUT) -> RestoreResult:
    """Restore backup ``backup_id`` of ``env_name`` into the database behind ``url``.

    ``confirm`` must be exactly ``"RESTORE"`` (the runbook's confirmation word). ``jobs``:
    pg_restore workers (0 = up to 4, by CPU count). ``pgbouncer_database`` is the database's
    name in pgBouncer when it differs from the real one.
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
    result = RestoreResult(info.id, None, None, mode, steps.steps, database=db)

    async with steps.step("verify backup") as note:
        problem = await backup_problem(info, tool_dirs=tool_dirs)
        if problem:
            raise ActionError(f"{problem}; nothing was changed. Pick another backup (`migrabot backups {env_name}`)")
        note["detail"] = f"{info.id}: checksums and archive table of contents are fine"

    if snapshot:
        async with steps.step("safety snapshot") as note:
            snap = await take_backup(url, backup_dir, env_name, reason=f"before restore of {info.id}",
                                     requested_by=requested_by, kind="pre-restore", tool_dirs=tool_dirs)
            result.snapshot_id = snap.id
            note["detail"] = f"current data saved as backup {snap.id}"
    else:
        await steps.skip("safety snapshot", "skipped on request (--no-snapshot)")

    if mode == "swap":
        await _restore_swap(url, db, info, result, steps, jobs=_default_jobs(jobs),
                            pgbouncer_admin_url=pgbouncer_admin_url, pgbouncer_db=pgbouncer_database or db,
                            tool_dirs=tool_dirs, timeout=timeout)
    else:
        await _restore_in_place(url, db, info, result, steps, jobs=_default_jobs(jobs),
                                pgbouncer_admin_url=pgbouncer_admin_url, pgbouncer_db=pgbouncer_database or db,
                                tool_dirs=tool_dirs, timeout=timeout, backup_dir=backup_dir, env_name=env_name)

    async with steps.step("verify connectivity") as note:
        async with connection(url) as conn:
            current = await conn.fetchval("SELECT current_database()", timeout=SQL_TIMEOUT)
        note["detail"] = f"connected to {current} through the normal URL"
    result.duration = time.monotonic() - started
    return result


async def _pgbouncer(admin_url: str | None, command: str) -> None:
    if admin_url:
        await admin_command(admin_url, command, timeout=SQL_TIMEOUT)


async def _restore_swap(url: str, db: str, info: BackupInfo, result: RestoreResult, steps: _Steps, *,
                        jobs: int, pgbouncer_admin_url: str | None, pgbouncer_db: str,
                        tool_dirs: Sequence[Path] | None, timeout: float) -> None:
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
                how = await _pg_restore(url, new, info, jobs=jobs, timeout=timeout, tool_dirs=tool_dirs)
                note["detail"] = f"into {new} ({how})" + "".join(f"; {w}" for w in warnings)
            async with steps.step("verify restored database") as note:
                note["detail"] = await _verify_restored(with_database(url, new), info)
        except BaseException as exc:
            # nothing has touched the original: drop the half-restored copy and stop
            if created:
                await _cleanup_copy(url, new)
            if isinstance(exc, ActionError):
                hint = "" if exc.code == "privilege" else f" (if pg_restore failed, the archive of {info.id} " \
                    "may be damaged: try another backup)"
                raise ActionError(f"{exc.message}; {db} was not changed and the partial copy was dropped{hint}",
                                  code=exc.code) from None
            raise
        async with steps.step("swap") as note:
            t0 = time.monotonic()
            await _swap(admin, url, db, new, previous, pgbouncer_admin_url, pgbouncer_db)
            result.unavailable_seconds = time.monotonic() - t0
            result.previous_database = previous
            note["detail"] = f"{new} is now {db}; the previous database is kept as {previous}"
    finally:
        await admin.close()


async def _cleanup_copy(url: str, name: str) -> None:
    try:
        await asyncio.shield(_drop_database(url, name))
    except Exception:
        log.error("could not drop the half-restored copy %s; drop it by hand", name, exc_info=True)


async def _swap(admin: asyncpg.Connection, url: str, db: str, new: str, previous: str,
                pgbouncer_admin_url: str | None, pgbouncer_db: str) -> None:
    """Rename ``db`` → ``previous`` and ``new`` → ``db``; on any failure put everything back.

    The undo looks at which databases exist rather than trusting flags: a rename may have
    happened on the server even when its answer was lost.
    """
    paused = False
    try:
        if pgbouncer_admin_url:
            paused = True  # before the call: a PAUSE that times out may still be in force
            await _pgbouncer(pgbouncer_admin_url, f"PAUSE {pgbouncer_db}")
        await _set_allow_connections(admin, db, False)
        await _rename_when_free(admin, db, previous)
        await admin.execute(f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(db)}", timeout=SQL_TIMEOUT)
    except BaseException as exc:
        problems = await asyncio.shield(_undo_swap(url, db, new, previous, paused=paused,
                                                   pgbouncer_admin_url=pgbouncer_admin_url,
                                                   pgbouncer_db=pgbouncer_db))
        reason = exc.message if isinstance(exc, ActionError) else (str(exc) or type(exc).__name__)
        if problems:
            raise ActionError(f"the swap failed ({reason}) and putting the original back failed too: "
                              + "; ".join(problems)) from None
        await _cleanup_copy(url, new)
        if isinstance(exc, Exception):
            raise ActionError(f"the swap failed ({reason}); the original database is back in place and "
                              "unchanged") from None
        raise
    # The swap is done: the previous database stays readable (for comparison) under its new name.
    try:
        await _set_allow_connections(admin, previous, True)
    except asyncpg.PostgresError:
        log.warning("could not re-allow connections to %s", previous, exc_info=True)
    if paused:
        try:
            await _pgbouncer(pgbouncer_admin_url, f"RESUME {pgbouncer_db}")
        except ActionError as exc:
            raise ActionError(f"the restore is done but pgBouncer is still paused ({exc.message}): run "
                              f"`RESUME {pgbouncer_db};` on its admin console now") from None


async def _undo_swap(url: str, db: str, new: str, previous: str, *, paused: bool,
                     pgbouncer_admin_url: str | None, pgbouncer_db: str) -> list[str]:
    """Put the original back under ``db``, connectable, on a fresh connection; return what failed."""
    manual = (f"by hand: if {previous} exists, rename {db} (if present) to {new} and {previous} to {db}; "
              f"then ALTER DATABASE {quote_ident(db)} WITH ALLOW_CONNECTIONS true"
              + (f" and RESUME {pgbouncer_db} on pgBouncer" if paused else ""))
    problems: list[str] = []
    try:
        admin = await _admin(url)
    except ActionError as exc:
        return [f"cannot reconnect to undo ({exc.message}); {manual}"]
    try:
        try:
            if await _database_exists(admin, previous):
                if await _database_exists(admin, db):  # the restored copy already took the name
                    await _rename_when_free(admin, db, new)
                await _rename_when_free(admin, previous, db)
            await _set_allow_connections(admin, db, True)
        except (asyncpg.PostgresError, ActionError) as exc:
            problems.append(f"{exc}; {manual}")
        if paused:
            try:
                await _pgbouncer(pgbouncer_admin_url, f"RESUME {pgbouncer_db}")
            except ActionError as exc:
                problems.append(f"RESUME {pgbouncer_db} failed ({exc.message}); run it on pgBouncer's console")
    finally:
        await admin.close()
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
