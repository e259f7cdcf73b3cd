"""Verified backups in the runbook's layout: ``<backup_dir>/<env>/YYYYMMDD_HHMMSS/``.

    >>> info = await take_backup(env.migration_url, env.backup_dir, "prod",
    ...                          reason="before 20240101_add_users", requested_by="U123")  # doctest: +SKIP
    >>> info.id, info.verified, info.last_migration                                          # doctest: +SKIP
    ('20240101_120000', True, '20231201_init')

Each backup directory holds the dump (``dump.pgdump``, or ``dump.dir/`` in directory
format) and ``manifest.json`` (what was dumped, by which pg_dump, checksums, the last
applied Prisma migration, status). A backup is reported only once ``pg_restore --list``
reads it back and its checksums are recorded; a failed one is removed.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from actions import pgtools
from actions.callbacks import call_safely
from actions.db import CONNECTION_ERRORS, connection, database_name, lost_connection_error
from actions.errors import ActionError
from actions.humanize import size

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CUSTOM_DUMP = "dump.pgdump"
DIRECTORY_DUMP = "dump.dir"
DEFAULT_TIMEOUT = 6 * 3600.0  # generous: a large production dump, but never forever
# pg_dump's --lock-wait-timeout: how long it may wait for a table another session holds exclusively
# (a migration, other DDL) before giving up with an error, instead of waiting out the whole timeout.
LOCK_WAIT_TIMEOUT = 60.0
PROGRESS_INTERVAL = 2.0
_ID = re.compile(r"^\d{8}_\d{6}(?:_\d+)?$")

ProgressCallback = Callable[["BackupProgress"], Any]


@dataclass(frozen=True)
class PreflightCheck:
    """One pre-flight check; ``skipped`` when an earlier failure made it impossible to run."""

    name: str
    ok: bool
    message: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "message": self.message, "skipped": self.skipped}


@dataclass(frozen=True)
class BackupProgress:
    bytes_written: int
    elapsed: float
    done: bool = False


@dataclass
class BackupInfo:
    """A backup directory and its manifest."""

    id: str
    env: str
    path: Path
    dump_path: Path
    manifest: dict[str, Any]
    created_at: datetime
    size_bytes: int
    last_migration: str | None
    applied_migrations: list[str] = field(default_factory=list)
    verified: bool = False
    kind: str = "backup"
    reason: str = ""
    requested_by: str = ""

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - self.created_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "env": self.env, "path": str(self.path), "dump_path": str(self.dump_path),
            "created_at": self.created_at.isoformat(), "size_bytes": self.size_bytes,
            "last_migration": self.last_migration, "applied_migrations": list(self.applied_migrations),
            "verified": self.verified, "kind": self.kind, "reason": self.reason,
            "requested_by": self.requested_by, "status": self.status,
            "database": self.manifest.get("database"), "format": self.manifest.get("format"),
        }


# --- what the server tells us -------------------------------------------------------------------


@dataclass
class ServerFacts:
    major: int
    version: str
    database: str
    size_bytes: int
    table_count: int
    last_migration: str | None
    applied_migrations: list[str]


async def server_facts(url: str, *, timeout: float = 10.0) -> ServerFacts:
    """Version, size, table count and applied Prisma migrations of the database behind ``url``.

    ActionError, in one sentence, when the server fails or drops the connection meanwhile.
    """
    async with connection(url, timeout=timeout) as conn:
        try:
            return await _facts(conn, timeout)
        except CONNECTION_ERRORS as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else None
            raise lost_connection_error(
                exc if what is None else TimeoutError(f"no answer within {timeout:g}s; a lock may block it"),
                f"reading the size and migrations of {database_name(url)} before the backup",
                "nothing was written", "check the server (`migrabot health ENV`, `migrabot blockers ENV`) and "
                "back up again", closed=conn.is_closed()) from None


async def _facts(conn: Any, timeout: float) -> ServerFacts:
    """The facts :func:`server_facts` reports, read through ``conn``."""
    num = int(await conn.fetchval("SHOW server_version_num", timeout=timeout))
    version = str(await conn.fetchval("SHOW server_version", timeout=timeout))
    db = await conn.fetchval("SELECT current_database()", timeout=timeout)
    size = int(await conn.fetchval("SELECT pg_database_size(current_database())", timeout=timeout))
    tables = int(await conn.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'", timeout=timeout))
    last, applied = await applied_migrations(conn, timeout=timeout)
    return ServerFacts(num // 10000, version, db, size, tables, last, applied)


async def applied_migrations(conn: Any, *, timeout: float = 10.0) -> tuple[str | None, list[str]]:
    """(last applied migration, all applied in order) from ``_prisma_migrations``, or (None, [])."""
    if await conn.fetchval("SELECT to_regclass('_prisma_migrations')", timeout=timeout) is None:
        return None, []
    rows = await conn.fetch(
        "SELECT migration_name FROM _prisma_migrations "
        "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL "
        "ORDER BY finished_at, migration_name", timeout=timeout)
    names = [r["migration_name"] for r in rows]
    return (names[-1] if names else None), names


# --- pre-flight -----------------------------------------------------------------------------------


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _check_writable(env_dir: Path) -> str | None:
    """None when a file can be written in ``env_dir`` (created if missing), else the problem."""
    try:
        env_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=env_dir, prefix=".migrabot-write-test-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return (f"cannot write to the backup directory {env_dir} ({exc.strerror or exc}): check it is a "
                f"directory the bot's user may write to (`ls -ld {env_dir.parent}`), or set backup_dir "
                "in migrabot.toml")
    return None


async def preflight(url: str, backup_dir: Path, env_name: str, *, free_margin: float = 1.5,
                    free_bytes: Callable[[Path], int] | None = None,
                    tool_dirs: Sequence[Path] | None = None, timeout: float = 10.0) -> list[PreflightCheck]:
    """The runbook's "Backup fails" causes, checked before anything is written.

    Checks, in order: ``connectivity``, ``pg_dump`` (one of the server's major or newer),
    ``backup_dir`` (writable, created when missing), ``disk_space`` (free space in the
    backup directory ≥ database size × ``free_margin``). ``free_bytes`` measures free
    space (tests inject it); ``tool_dirs`` restricts where pg_dump is looked for.
    """
    checks, _ = await _preflight(url, backup_dir, env_name, free_margin=free_margin, free_bytes=free_bytes,
                                 tool_dirs=tool_dirs, timeout=timeout)
    return checks


async def _preflight(url: str, backup_dir: Path, env_name: str, *, free_margin: float,
                     free_bytes: Callable[[Path], int] | None, tool_dirs: Sequence[Path] | None,
                     timeout: float) -> tuple[list[PreflightCheck], ServerFacts | None]:
    checks: list[PreflightCheck] = []
    facts: ServerFacts | None = None
    try:
        facts = await server_facts(url, timeout=timeout)
        checks.append(PreflightCheck("connectivity", True,
                                     f"connected to {facts.database} (PostgreSQL {facts.version})"))
    except ActionError as exc:
        checks.append(PreflightCheck("connectivity", False, exc.message))
    if facts is None:
        checks.append(PreflightCheck("pg_dump", False, "not checked: the database cannot be reached", True))
    else:
        try:
            tool = await asyncio.to_thread(pgtools.find_pg_tool, "pg_dump", facts.major, search_dirs=tool_dirs)
            checks.append(PreflightCheck("pg_dump", True, f"{tool.path} ({tool.version_text}): {tool.why}"))
        except ActionError as exc:
            checks.append(PreflightCheck("pg_dump", False, exc.message))
    env_dir = Path(backup_dir) / env_name
    problem = await asyncio.to_thread(_check_writable, env_dir)
    checks.append(PreflightCheck("backup_dir", problem is None, problem or f"{env_dir} is writable"))
    if problem is not None or facts is None:
        why = "the backup directory is not usable" if problem else "the database size is unknown"
        checks.append(PreflightCheck("disk_space", False, f"not checked: {why}", True))
    else:
        free = (free_bytes or _free_bytes)(env_dir)
        need = int(facts.size_bytes * free_margin)
        if free < need:
            checks.append(PreflightCheck(
                "disk_space", False,
                f"only {size(free)} free in {env_dir} but the database is {size(facts.size_bytes)} "
                f"(needs {size(need)} with margin {free_margin:g}): free some space (`df -h {env_dir}`, "
                "prune old backups with `migrabot backups ENV --prune`) or point backup_dir elsewhere"))
        else:
            checks.append(PreflightCheck(
                "disk_space", True, f"{size(free)} free, database is {size(facts.size_bytes)}"))
    return checks, facts


def failed_checks(checks: Sequence[PreflightCheck]) -> list[PreflightCheck]:
    return [c for c in checks if not c.ok and not c.skipped]


# --- taking a backup ------------------------------------------------------------------------------


def _new_backup_dir(env_dir: Path, now: datetime) -> Path:
    """``YYYYMMDD_HHMMSS``, with ``_2``, ``_3`` … on a same-second collision (mkdir is the lock)."""
    base = now.strftime("%Y%m%d_%H%M%S")
    for n in range(1, 1000):
        candidate = env_dir / (base if n == 1 else f"{base}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ActionError(f"too many backups named {base} in {env_dir}; remove some and retry")


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _checksums(dump_path: Path, root: Path) -> dict[str, str]:
    files = sorted(p for p in dump_path.rglob("*") if p.is_file()) if dump_path.is_dir() else [dump_path]
    return {str(p.relative_to(root)): _sha256(p) for p in files}


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)


def _now() -> datetime:
    return datetime.now(UTC)


async def take_backup(url: str, backup_dir: Path, env_name: str, *, reason: str, requested_by: str,
                      jobs: int = 0, free_margin: float = 1.5, kind: str = "backup",
                      on_progress: ProgressCallback | None = None,
                      free_bytes: Callable[[Path], int] | None = None,
                      tool_dirs: Sequence[Path] | None = None, timeout: float = DEFAULT_TIMEOUT,
                      progress_interval: float = PROGRESS_INTERVAL,
                      lock_wait_timeout: float = LOCK_WAIT_TIMEOUT) -> BackupInfo:
    """Dump the database behind ``url`` and verify the archive; ActionError when it cannot.

    Pre-flight runs first: when any check fails nothing is written and the error lists
    every failed check. ``jobs > 1`` uses pg_dump's directory format with that many
    workers; otherwise one custom-format file. ``on_progress`` (sync or async) receives
    :class:`BackupProgress` every ``progress_interval`` seconds and once at the end. pg_dump
    waits at most ``lock_wait_timeout`` seconds for a table another session locks exclusively.
    Whatever stops it (an error, a cancellation, SIGTERM through the CLI) removes the folder.
    """
    if kind not in ("backup", "pre-restore"):
        raise ActionError(f'unknown backup kind "{kind}" (expected "backup" or "pre-restore")')
    checks, facts = await _preflight(url, backup_dir, env_name, free_margin=free_margin, free_bytes=free_bytes,
                                     tool_dirs=tool_dirs, timeout=10.0)
    failed = failed_checks(checks)
    if failed or facts is None:
        raise ActionError(f"cannot back up {env_name}: " + "; ".join(c.message for c in failed),
                          code="preflight")
    dump_tool = pgtools.find_pg_tool("pg_dump", facts.major, search_dirs=tool_dirs)
    # the archive must be readable by a pg_restore at least as new as the pg_dump that wrote it
    restore_tool = pgtools.find_pg_tool("pg_restore", max(facts.major, dump_tool.major), search_dirs=tool_dirs)
    env_dir = Path(backup_dir) / env_name
    started = _now()
    directory = _new_backup_dir(env_dir, started)
    fmt = "directory" if jobs > 1 else "custom"
    dump_path = directory / (DIRECTORY_DUMP if fmt == "directory" else CUSTOM_DUMP)
    manifest: dict[str, Any] = {
        "id": directory.name, "environment": env_name, "database": facts.database, "server": server_of(url),
        "server_version": facts.version, "server_major": facts.major,
        "pg_dump": {"path": str(dump_tool.path), "version": dump_tool.version_text, "major": dump_tool.major},
        "started_at": started.isoformat(), "finished_at": None, "size_bytes": 0, "files": {},
        "last_migration": facts.last_migration, "applied_migrations": facts.applied_migrations,
        "table_count": facts.table_count, "database_size_bytes": facts.size_bytes,
        "reason": reason, "requested_by": requested_by, "kind": kind, "format": fmt,
        "dump": dump_path.name, "jobs": jobs if fmt == "directory" else 1,
        "status": "running", "verified": False,
        # who is writing it: a "running" backup whose process is gone is listed as interrupted
        "pid": os.getpid(), "host": socket.gethostname(),
    }
    _write_manifest(directory, manifest)  # a crash mid-dump leaves a "running" (unverified) backup
    try:
        conninfo, env = pgtools.libpq_args(url)
        args: list[str | Path] = [dump_tool.path, "--no-password", "-f", dump_path, "-d", conninfo,
                                  f"--lock-wait-timeout={max(1, round(lock_wait_timeout * 1000))}ms"]
        args[1:1] = ["-Fd", "-j", str(jobs)] if fmt == "directory" else ["-Fc"]
        t_dump = time.monotonic()
        await _run_dump(args, env, dump_path, timeout=timeout, on_progress=on_progress,
                        interval=progress_interval, lock_wait_timeout=lock_wait_timeout)
        manifest["dump_seconds"] = round(time.monotonic() - t_dump, 3)
        files = await asyncio.to_thread(_checksums, dump_path, directory)
        toc = await pgtools.run_tool_output(
            [restore_tool.path, "--list", dump_path], env, timeout=600, what="pg_restore --list of the new backup")
        manifest.update({
            "finished_at": _now().isoformat(), "files": files, "size_bytes": _size(dump_path),
            "toc_entries": sum(1 for line in toc.splitlines() if line and not line.startswith(";")),
            "status": "ok", "verified": True,
        })
        _write_manifest(directory, manifest)
    except BaseException as exc:
        _discard(directory, manifest, exc)
        raise
    return _load(directory, env_name)


async def _run_dump(args: list[str | Path], env: dict[str, str], dump_path: Path, *, timeout: float,
                    on_progress: ProgressCallback | None, interval: float, lock_wait_timeout: float) -> None:
    """Run pg_dump (it writes the file itself: nothing goes through memory) and report progress."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in args), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    stderr_task = asyncio.ensure_future(proc.stderr.read())  # type: ignore[union-attr]
    try:
        while True:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise ActionError(f"pg_dump did not finish within {timeout:g}s and was stopped; raise the "
                                  "backup timeout, or check for locks (`SELECT * FROM pg_locks WHERE NOT granted`)",
                                  code="timeout")
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=min(interval, timeout - elapsed))
                break
            except TimeoutError:
                await call_safely(on_progress, BackupProgress(_size(dump_path), time.monotonic() - start),
                                 "backup progress")
        err = (await stderr_task).decode(errors="replace")
        if proc.returncode != 0:
            hint = ""
            if "LOCK TABLE" in err and "timeout" in err:
                hint = (f"; pg_dump gave up waiting {lock_wait_timeout:g}s for a table lock: another session holds "
                        "a table exclusively (a migration or other DDL): see who with `migrabot blockers ENV`, "
                        "then back up again")
            raise ActionError(f"pg_dump failed: {pgtools.error_summary(err)}{hint}", code="pg_dump")
        if err.strip():
            log.info("pg_dump said: %s", pgtools.trim(err))
        await call_safely(on_progress, BackupProgress(_size(dump_path), time.monotonic() - start, done=True),
                          "backup progress")
    finally:
        await pgtools.kill(proc)
        if not stderr_task.done():
            stderr_task.cancel()


def _discard(directory: Path, manifest: dict[str, Any], exc: BaseException) -> None:
    """Remove a failed backup; when that fails too, mark it failed so nobody restores it."""
    try:
        shutil.rmtree(directory)
        return
    except OSError:
        log.warning("could not remove the failed backup %s", directory, exc_info=True)
    try:
        manifest.update({"status": "failed", "verified": False, "error": str(exc) or type(exc).__name__,
                         "finished_at": _now().isoformat()})
        _write_manifest(directory, manifest)
    except OSError:
        log.error("could not mark the failed backup %s as failed", directory, exc_info=True)


# --- reading backups --------------------------------------------------------------------------------


def _parse_id_time(backup_id: str) -> datetime | None:
    try:
        return datetime.strptime(backup_id[:15], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _load(directory: Path, env_name: str) -> BackupInfo:
    """A backup directory as BackupInfo; one without a (readable) manifest is unverified."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        manifest = {"status": "unknown"}
    created = None
    if manifest.get("started_at"):
        try:
            created = datetime.fromisoformat(manifest["started_at"])
        except (TypeError, ValueError):
            created = None
    if created is None:
        created = _parse_id_time(directory.name) or datetime.fromtimestamp(directory.stat().st_mtime, UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if manifest.get("status") == "running" and not _writer_alive(manifest):
        manifest = {**manifest, "status": "interrupted"}
    dump_name = manifest.get("dump")
    dump_path = directory / dump_name if isinstance(dump_name, str) else _guess_dump(directory)
    size = manifest.get("size_bytes") or _size(dump_path)
    return BackupInfo(
        id=directory.name, env=env_name, path=directory, dump_path=dump_path, manifest=manifest,
        created_at=created, size_bytes=int(size), last_migration=manifest.get("last_migration"),
        applied_migrations=list(manifest.get("applied_migrations") or []),
        verified=manifest.get("status") == "ok" and bool(manifest.get("verified")),
        kind=str(manifest.get("kind", "backup")), reason=str(manifest.get("reason", "")),
        requested_by=str(manifest.get("requested_by", "")))


def _writer_alive(manifest: dict[str, Any]) -> bool:
    """Whether the process writing a "running" backup still exists (True when that cannot be told here)."""
    pid, host = manifest.get("pid"), manifest.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user
        return True
    return True


def _guess_dump(directory: Path) -> Path:
    """The dump of a backup without manifest (e.g. one the runbook's script made)."""
    candidates = sorted(p for p in directory.iterdir() if p.name != MANIFEST) if directory.is_dir() else []
    return candidates[0] if candidates else directory


def list_backups(backup_dir: Path, env_name: str) -> list[BackupInfo]:
    """Every backup of ``env_name``, newest first (including failed and unverified ones)."""
    env_dir = Path(backup_dir) / env_name
    if not env_dir.is_dir():
        return []
    infos = [_load(d, env_name) for d in env_dir.iterdir()
             if d.is_dir() and (_ID.match(d.name) or (d / MANIFEST).exists())]
    return sorted(infos, key=lambda b: (b.created_at, b.id), reverse=True)


def server_of(url: str) -> str:
    """``host:port`` of a PostgreSQL URL: where a backup came from (no user, no password).

    >>> server_of("postgresql://app:pw@db.internal/prod"), server_of("postgresql://app@[::1]:6543/p")
    ('db.internal:5432', '[::1]:6543')
    """
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 5432}"


def origin_problem(info: BackupInfo, env_name: str, url: str) -> str | None:
    """Why ``info`` may not be what should go into ``env_name``'s database at ``url`` (None: it came from there).

    A backup with no manifest cannot say where it came from; one that names another environment,
    database or server is someone else's data. (Backups written before the server was recorded
    are judged on environment and database.)
    """
    manifest = info.manifest
    if "environment" not in manifest and "database" not in manifest:
        return f"backup {info.id} has no manifest saying where it came from"
    here = {"environment": env_name, "database": database_name(url), "server": server_of(url)}
    differ = [f"{key} {manifest[key]!r} (not {value!r})" for key, value in here.items()
              if manifest.get(key) is not None and manifest.get(key) != value]
    if differ:
        return f"backup {info.id} was taken from another place: " + ", ".join(differ)
    return None


def get_backup(backup_dir: Path, env_name: str, backup_id: str) -> BackupInfo:
    """The backup ``backup_id`` (``latest`` = newest verified regular backup); ActionError naming the nearest ids.

    ``latest`` never picks a pre-restore safety snapshot: they hold the data a restore replaced,
    and restoring one is a decision to name it explicitly.
    """
    backups = list_backups(backup_dir, env_name)
    if backup_id == "latest":
        for b in backups:
            if b.verified and b.kind != "pre-restore":
                return b
        snapshots = [b.id for b in backups if b.verified and b.kind == "pre-restore"]
        also = (f" (there are pre-restore safety snapshots: {', '.join(snapshots[:3])}; name one to restore it)"
                if snapshots else "")
        raise ActionError(f"there is no verified backup of {env_name} in {Path(backup_dir) / env_name}{also}; "
                          f"take one with `migrabot backup {env_name}`")
    for b in backups:
        if b.id == backup_id:
            return b
    ids = [b.id for b in backups]
    near = difflib.get_close_matches(backup_id, ids, n=3, cutoff=0.5) or ids[:3]
    hint = f"nearest: {', '.join(near)}" if near else "there are no backups yet"
    raise ActionError(f'no backup "{backup_id}" for {env_name} ({hint}); list them with '
                      f"`migrabot backups {env_name}`", code="not_found")


async def backup_problem(info: BackupInfo, *, tool_dirs: Sequence[Path] | None = None,
                         timeout: float = 600.0) -> str | None:
    """Why ``info`` cannot be restored (status, files, sha256, ``pg_restore --list``), or None."""
    if info.status != "ok" or not info.verified:
        return f"backup {info.id} is not a verified backup (status: {info.status})"
    files = info.manifest.get("files") or {}
    if not files:
        return f"backup {info.id} has no recorded checksums"
    for rel, expected in files.items():
        path = info.path / rel
        if not path.is_file():
            return f"backup {info.id} is missing {rel}"
        actual = await asyncio.to_thread(_sha256, path)
        if actual != expected:
            return f"backup {info.id} is damaged: the checksum of {rel} does not match its manifest"
    if not info.dump_path.exists():
        return f"backup {info.id} is missing its dump {info.dump_path.name}"
    major = int((info.manifest.get("pg_dump") or {}).get("major") or info.manifest.get("server_major") or 0)
    try:
        tool = await asyncio.to_thread(pgtools.find_pg_tool, "pg_restore", major, search_dirs=tool_dirs)
        _, env = pgtools.libpq_args("postgresql:///")
        await pgtools.run_tool_output([tool.path, "--list", info.dump_path], env, timeout=timeout,
                                      what=f"pg_restore --list of backup {info.id}")
    except ActionError as exc:
        return f"backup {info.id} cannot be read: {exc.message}"
    return None


async def verify_backup(info: BackupInfo, *, tool_dirs: Sequence[Path] | None = None) -> bool:
    """True when the backup's checksums match and ``pg_restore --list`` reads it."""
    return await backup_problem(info, tool_dirs=tool_dirs) is None
