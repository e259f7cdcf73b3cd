"""Rehearse the pending migrations on a restored copy: what each statement locks, for how long, on how much data.

    >>> result = await rehearse(env.migration_url, env.migrations_dir, env.backup_dir, "prod")  # doctest: +SKIP
    >>> result.restore_tested                                                                   # doctest: +SKIP
    'restore tested on 2024-05-01: 12.0 s for 1.2 GB'
    >>> [m.verdict for m in result.migrations]                                                  # doctest: +SKIP
    ['safe while the app runs', 'blocks reads and writes to `users` for ~12 s']

What happens (``rehearse``; ``rehearse_environment`` takes the settings from an Environment):

1. The live database is only read: its ``_prisma_migrations`` say what is pending (as
   ``migrabot status`` does) and ``pg_database_size`` how much room the copy needs. Nothing is
   written there, no lock beyond a plain SELECT is taken.
2. The backup (the newest verified one, or ``backup_id``) is checked as a restore checks it
   (checksums, ``pg_restore --list``), then restored with the restore's own code (``pg_restore
   -j``) into a scratch database ``<db>__rehearsal_<YYYYMMDDHHMMSS>`` on the same server, or on
   ``rehearsal_url``, and verified (it has the tables and the last migration of the manifest).
   How long that took and how big the copy is make the "restore tested" line of the rollback plan.
   Before that, copies earlier rehearsals left behind (a kill -9) are dropped, and the rehearsal
   refuses to start when the server has not the room for the copy (when that can be measured).
3. ``ANALYZE``; autovacuum is switched off on the copy's tables so it cannot get in the way of
   the measurements. Migrations applied to the live database after the backup was taken are
   applied first ("caught up"), then the pending ones with the environment's ``lock_timeout``,
   ``statement_timeout`` and retries, one statement at a time, and recorded in the copy's
   ``_prisma_migrations`` as a deploy records them. Per statement: wall time; the strongest lock
   it took on each relation and how long it was held; whether a table was rewritten
   (``pg_class.relfilenode`` changed) or scanned (sequential scans counted); rows read and written;
   indexes built (new or rebuilt; ``pg_stat_progress_create_index`` phases seen); the error with
   the statement and its line.
4. The scratch database is dropped, whatever happened.

How the locks are measured. PostgreSQL keeps a table lock until the end of the transaction, and
the rehearsal controls the transactions: after each statement it reads ``pg_locks`` for its own
session inside the transaction, so the locks each statement added are known exactly. Each is held
from the start of that statement to the COMMIT (or ROLLBACK); the hold counts the time the server
spent on the migration's statements and the COMMIT, not the rehearsal's own measuring queries in
between (a deploy sends the file in one go). A statement that cannot run in a transaction
(``CREATE INDEX CONCURRENTLY``) is watched by a second connection sampling ``pg_locks`` every
``sample_interval`` (20 ms): held from the first sample that saw the lock to the statement's end. A
statement too quick for any sample gets the modes of the documentation table
(``actions.lock_levels``), marked ``documented``. Rows come from ``pg_stat_xact_user_tables``
inside the transaction, or from ``pg_stat_user_tables`` after ``pg_stat_force_next_flush()``
(PostgreSQL 15+) outside one.

The verdict of a migration: "safe while the app runs" when no table that existed before it had its
writes blocked for ``safe_hold`` (1 s) or more; else "blocks writes to `users` for ~12 s" (SHARE,
SHARE ROW EXCLUSIVE, EXCLUSIVE) or "blocks reads and writes to `users` for ~12 s" (ACCESS
EXCLUSIVE, also on one of the table's indexes); "failed: <error> (statement N, line L)".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from actions import humanize, prisma_table
from actions.after_migrate import run_verify_queries
from actions.backup import BackupInfo, backup_problem, get_backup
from actions.callbacks import call_safely
from actions.db import (
    asyncpg_dsn,
    close_quietly,
    connect,
    connection,
    database_name,
    host_and_port,
    quote_ident,
    with_database,
)
from actions.deploy import refuse_unsafe_state
from actions.errors import ActionError
from actions.lock_levels import MODES, LockEffect, blocks, classify, mode_name
from actions.lock_levels import strongest as strongest_mode
from actions.migrations_dir import LocalMigration, read_migrations
from actions.restore import fit_name, restore_into_new_database
from actions.sql_runner import backoff_delay, describe_db_error
from actions.sqlsplit import Statement, split_sql, statement_non_transactional_reason
from actions.status import MigrationStatus, status_on
from bot.config import Environment, RetryPolicy

log = logging.getLogger(__name__)

SCRATCH_SUFFIX = "__rehearsal_"
STAMP_DIGITS = 14
LOCK_CLASS = 0x6D627268  # "mbrh": the advisory lock a running rehearsal holds on its scratch database's name
SQL_TIMEOUT = 30.0
SAMPLE_INTERVAL = 0.02
SAFE_HOLD = 1.0  # a write-blocking lock held shorter than this counts as "safe while the app runs"
DEFAULT_TIMEOUT = 6 * 3600.0
STATEMENT_CHARS = 200
APPLICATION = "migrabot-rehearsal"

StepCallback = Callable[["RehearsalStep"], Any]


# --- results ------------------------------------------------------------------------------------------


def plain_name(relation: str) -> str:
    """A relation name for people: ``"User"`` → ``User``, ``app."Post"`` → ``app.Post``.

    >>> plain_name('"User"'), plain_name('app."Post"'), plain_name("users")
    ('User', 'app.Post', 'users')
    """
    return re.sub(r'"((?:[^"]|"")*)"', lambda m: m.group(1).replace('""', '"'), relation)


def approx(seconds: float) -> str:
    """A hold time the way a verdict says it.

    >>> approx(0.004), approx(2.46), approx(12.4), approx(185)
    ('~4 ms', '~2.5 s', '~12 s', '~3m 5s')
    """
    if seconds < 1:
        return f"~{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"~{seconds:.1f} s"
    if seconds < 120:
        return f"~{seconds:.0f} s"
    return "~" + humanize.duration(seconds)


@dataclass(frozen=True)
class RehearsalStep:
    name: str
    status: str  # "started" | "done" | "failed"
    duration: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "duration": round(self.duration, 3), "detail": self.detail}


@dataclass
class LockHeld:
    """A lock one statement took: on ``relation`` (a table or an index of ``table``), in ``mode``, for ``held_for``.

    ``how``: ``exact`` (read in the statement's own transaction), ``sampled`` (seen by the watching
    connection) or ``documented`` (too quick to see: the documentation table's mode).
    ``existed``: the relation existed before the migration (a new one makes nobody wait).
    """

    relation: str
    table: str
    mode: str
    held_for: float = 0.0
    existed: bool = True
    how: str = "exact"

    @property
    def blocks(self) -> str:
        return blocks(self.mode)

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "table": self.table, "mode": self.mode, "held_for": round(self.held_for, 4),
                "blocks": self.blocks, "existed": self.existed, "how": self.how}


@dataclass
class StatementResult:
    index: int
    line: int
    text: str  # on one line, trimmed
    how: str  # "in the migration's transaction" | "in its own transaction" | "outside a transaction" | …
    expected: list[LockEffect] = field(default_factory=list)  # the documentation table's view
    wall_time: float = 0.0
    locks: list[LockHeld] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)
    rows_read: int | None = None  # every row read, by every scan (a rewrite reads the table, then each index build)
    rows_scanned: int | None = None  # the most rows one scan read: the size of the largest table it went through
    rows_written: int | None = None
    index_builds: list[str] = field(default_factory=list)
    index_phases: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    error: str | None = None
    error_message: str | None = None

    @property
    def rows(self) -> int | None:
        """Rows written, or else the rows of the largest table it scanned (what the statement went through)."""
        if self.rows_written:
            return self.rows_written
        return self.rows_scanned if self.rows_scanned else self.rows_read

    @property
    def main_lock(self) -> LockHeld | None:
        """The lock that matters most: the strongest on a relation that existed, the longest held among equals."""
        candidates = [lock for lock in self.locks if lock.existed] or self.locks
        if not candidates:
            return None
        top = strongest_mode([lock.mode for lock in candidates])
        return max((lock for lock in candidates if lock.mode == top), key=lambda lock: lock.held_for)

    def row(self) -> dict[str, str]:
        """The statement as a table row for people: statement, lock, held for, rewrite, rows, time."""
        lock = self.main_lock
        what = (["failed"] if self.error else []) + [f"rewrite {plain_name(t)}" for t in self.rewritten] + \
            [f"scan {plain_name(t)}" for t in self.scanned if t not in self.rewritten] + \
            [f"index {plain_name(i)}" for i in self.index_builds if not self.rewritten]
        return {
            "statement": f"line {self.line}: {self.text[:70]}",
            "lock": f"{lock.mode} on {plain_name(lock.relation)}" + ("" if lock.existed else " (new)") if lock else "",
            "held for": humanize.duration(lock.held_for) if lock else "",
            "rewrite": ", ".join(what) or "-",
            "rows": f"{self.rows:,}" if self.rows is not None else "?",
            "time": humanize.duration(self.wall_time),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "line": self.line, "statement": self.text, "how": self.how,
            "wall_time": round(self.wall_time, 4), "locks": [lock.to_dict() for lock in self.locks],
            "expected": [effect._asdict() for effect in self.expected], "rewritten": list(self.rewritten),
            "scanned": list(self.scanned), "rows_read": self.rows_read, "rows_scanned": self.rows_scanned,
            "rows_written": self.rows_written,
            "index_builds": list(self.index_builds), "index_phases": list(self.index_phases),
            "created": list(self.created), "dropped": list(self.dropped), "error": self.error,
        }


@dataclass(frozen=True)
class Blocking:
    """A table the application could not fully use while a migration ran: reads and writes, or writes, waited."""

    table: str
    writes: float  # seconds writes waited (ACCESS EXCLUSIVE, EXCLUSIVE, SHARE ROW EXCLUSIVE, SHARE)
    reads: float  # seconds reads waited too (ACCESS EXCLUSIVE)

    def describe(self, safe_hold: float = SAFE_HOLD) -> str:
        name = plain_name(self.table)
        if self.reads >= safe_hold:
            extra = f", writes for {approx(self.writes)}" if self.writes - self.reads >= safe_hold else ""
            return f"blocks reads and writes to `{name}` for {approx(self.reads)}{extra}"
        return f"blocks writes to `{name}` for {approx(self.writes)}"


@dataclass
class MigrationResult:
    name: str
    checksum: str
    transactional: bool
    status: str = "not run"  # "applied" | "failed" | "not run" | "caught up"
    duration: float = 0.0
    attempts: int = 0
    statements: list[StatementResult] = field(default_factory=list)
    error: str | None = None
    safe_hold: float = SAFE_HOLD

    def blocking(self) -> list[Blocking]:
        """Tables that existed before the migration and whose writes (or reads) waited, longest first."""
        writes: dict[str, float] = {}
        reads: dict[str, float] = {}
        for st in self.statements:
            for lock in st.locks:
                if not lock.existed or lock.blocks not in ("reads and writes", "writes"):
                    continue
                writes[lock.table] = max(writes.get(lock.table, 0.0), lock.held_for)
                if lock.blocks == "reads and writes":
                    reads[lock.table] = max(reads.get(lock.table, 0.0), lock.held_for)
        return sorted((Blocking(t, w, reads.get(t, 0.0)) for t, w in writes.items()), key=lambda b: -b.writes)

    @property
    def verdict(self) -> str:
        """One line: "safe while the app runs" / "blocks writes to `users` for ~12 s" / "failed: …"."""
        if self.status == "failed":
            failed = next((s for s in self.statements if s.error), None)
            where = f" (statement {failed.index}, line {failed.line})" if failed else ""
            message = (failed.error_message if failed and failed.error_message else
                       (self.error or "unknown error").splitlines()[0])
            return f"failed: {message}{where}"
        if self.status == "not run":
            return "not rehearsed: an earlier migration failed"
        long_ones = [b for b in self.blocking() if b.writes >= self.safe_hold]
        if not long_ones:
            return "safe while the app runs"
        return "; ".join(b.describe(self.safe_hold) for b in long_ones)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "transactional": self.transactional,
                "status": self.status, "verdict": self.verdict, "duration": round(self.duration, 3),
                "attempts": self.attempts, "error": self.error,
                "blocking": [{"table": b.table, "writes_seconds": round(b.writes, 4),
                              "reads_seconds": round(b.reads, 4)} for b in self.blocking()],
                "statements": [s.to_dict() for s in self.statements]}


@dataclass
class RehearsalResult:
    environment: str
    database: str  # the live database's name
    server: str  # host:port where the copy was made
    scratch_database: str
    backup_id: str
    backup_created_at: datetime
    started_at: datetime
    finished_at: datetime | None = None
    restore_seconds: float | None = None
    restored_bytes: int | None = None
    restore_detail: str = ""
    analyze_seconds: float | None = None
    disk_check: str = ""
    pending: list[str] = field(default_factory=list)
    caught_up: list[str] = field(default_factory=list)
    migrations: list[MigrationResult] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)  # of the rehearsed files: a changed file is stale
    leftovers_dropped: list[str] = field(default_factory=list)
    dropped: bool = False
    steps: list[RehearsalStep] = field(default_factory=list)
    verify: list[dict[str, str | None]] = field(default_factory=list)  # verify_queries on the migrated copy

    @property
    def ok(self) -> bool:
        """Every pending migration applied on the copy."""
        return all(m.status == "applied" for m in self.migrations) and len(self.migrations) == len(self.pending)

    @property
    def failed(self) -> MigrationResult | None:
        return next((m for m in self.migrations if m.status == "failed"), None)

    @property
    def duration(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None

    @property
    def restore_tested(self) -> str | None:
        """The rollback plan's line: "restore tested on 2024-05-01: 12.0 s for 1.2 GB"."""
        if self.restore_seconds is None or self.restored_bytes is None:
            return None
        return (f"restore tested on {self.started_at:%Y-%m-%d}: {humanize.duration(self.restore_seconds)} for "
                f"{humanize.size(self.restored_bytes)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "database": self.database, "server": self.server,
            "scratch_database": self.scratch_database, "backup_id": self.backup_id,
            "backup_created_at": self.backup_created_at.isoformat(), "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration": None if self.duration is None else round(self.duration, 3), "ok": self.ok,
            "restore_seconds": None if self.restore_seconds is None else round(self.restore_seconds, 3),
            "restored_bytes": self.restored_bytes, "restore_tested": self.restore_tested,
            "restore_detail": self.restore_detail,
            "analyze_seconds": None if self.analyze_seconds is None else round(self.analyze_seconds, 3),
            "disk_check": self.disk_check, "pending": list(self.pending), "caught_up": list(self.caught_up),
            "migrations": [m.to_dict() for m in self.migrations], "checksums": dict(self.checksums),
            "leftovers_dropped": list(self.leftovers_dropped), "dropped": self.dropped,
            "verify": list(self.verify),
            "steps": [s.to_dict() for s in self.steps if s.status != "started"],
        }


class _Steps:
    def __init__(self, on_step: StepCallback | None, steps: list[RehearsalStep]) -> None:
        self.on_step = on_step
        self.steps = steps

    async def emit(self, step: RehearsalStep) -> None:
        self.steps.append(step)
        await call_safely(self.on_step, step, "rehearsal step")

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[dict[str, str]]:
        note = {"detail": ""}
        start = time.monotonic()
        await self.emit(RehearsalStep(name, "started"))
        try:
            yield note
        except BaseException as exc:
            detail = exc.message if isinstance(exc, ActionError) else (str(exc) or type(exc).__name__)
            await self.emit(RehearsalStep(name, "failed", time.monotonic() - start, detail))
            raise
        await self.emit(RehearsalStep(name, "done", time.monotonic() - start, note["detail"]))


# --- scratch databases --------------------------------------------------------------------------------


def scratch_prefix(database: str) -> str:
    """What every scratch copy of ``database`` starts with (the base cut to fit 63 bytes).

    >>> scratch_prefix("shop")
    'shop__rehearsal_'
    """
    return fit_name(database, SCRATCH_SUFFIX + "0" * STAMP_DIGITS)[:-STAMP_DIGITS]


def scratch_name(database: str, when: datetime) -> str:
    """``<db>__rehearsal_<YYYYMMDDHHMMSS>``, at most 63 bytes.

    >>> scratch_name("shop", datetime(2024, 5, 1, 12, 0, 0))
    'shop__rehearsal_20240501120000'
    >>> len(scratch_name("x" * 80, datetime(2024, 5, 1)))
    63
    """
    return fit_name(database, SCRATCH_SUFFIX + when.strftime("%Y%m%d%H%M%S"))


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode())


def _int4(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


@dataclass(frozen=True)
class ScratchDatabase:
    """A scratch copy on a server; ``in_use`` when a running rehearsal holds it (its advisory lock)."""

    name: str
    created_at: datetime | None
    size_bytes: int | None
    in_use: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at.isoformat() if self.created_at else None,
                "size_bytes": self.size_bytes, "in_use": self.in_use}


async def _admin(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """A connection to the server's maintenance database (``postgres``, else ``template1``)."""
    try:
        return await connect(with_database(url, "postgres"), timeout=timeout, application_name=APPLICATION)
    except ActionError as first:
        try:
            return await connect(with_database(url, "template1"), timeout=timeout, application_name=APPLICATION)
        except ActionError:
            raise first from None


async def _scratch_on(admin: asyncpg.Connection, database: str) -> list[ScratchDatabase]:
    prefix = scratch_prefix(database)
    rows = await admin.fetch(
        "SELECT datname, CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END AS size "
        "FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname", prefix, timeout=SQL_TIMEOUT)
    held = {r["objid"] for r in await admin.fetch(
        "SELECT objid::int8 AS objid FROM pg_locks WHERE locktype = 'advisory' AND classid::int8 = $1 "
        "AND objsubid = 2 AND granted", LOCK_CLASS, timeout=SQL_TIMEOUT)}
    found = []
    for r in rows:
        stamp = r["datname"][len(prefix):]
        if not re.fullmatch(rf"\d{{{STAMP_DIGITS}}}", stamp):
            continue
        try:
            created: datetime | None = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            created = None
        found.append(ScratchDatabase(r["datname"], created, r["size"], _lock_key(r["datname"]) in held))
    return found


async def scratch_databases(url: str, database: str | None = None) -> list[ScratchDatabase]:
    """Every rehearsal copy of ``database`` (default: the URL's) on the server behind ``url``, running or not."""
    admin = await _admin(url)
    try:
        return await _scratch_on(admin, database or database_name(url))
    finally:
        await close_quietly(admin)


async def leftover_scratch_databases(url: str, database: str | None = None) -> list[ScratchDatabase]:
    """Copies no running rehearsal holds: left behind by a rehearsal that was killed (for ``migrabot health``).

    ``url``: the server the copies are made on (``rehearsal_url``, else the environment's own);
    ``database``: the live database's name when it differs from the URL's.
    """
    return [s for s in await scratch_databases(url, database) if not s.in_use]


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    """Drop ``name`` now, ending its sessions (an orphaned pg_restore of a killed rehearsal may still be there)."""
    force = admin.get_server_version().major >= 13
    for attempt in range(40):
        try:
            if not force:
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                    name, timeout=SQL_TIMEOUT)
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}" + (" WITH (FORCE)" if force else ""),
                                timeout=300)
            return
        except asyncpg.ObjectInUseError:
            if attempt == 39:
                raise ActionError(f'the scratch database "{name}" is still in use after 10 s; drop it by hand: '
                                  f"DROP DATABASE {quote_ident(name)} WITH (FORCE)") from None
            await asyncio.sleep(0.25)


async def _drop_leftovers(admin: asyncpg.Connection, database: str, keep: str) -> list[str]:
    dropped = []
    for scratch in await _scratch_on(admin, database):
        if scratch.name != keep and not scratch.in_use:
            await _drop_database(admin, scratch.name)
            dropped.append(scratch.name)
    return dropped


async def _claim(admin: asyncpg.Connection, name: str) -> None:
    """Hold the advisory lock that tells other rehearsals ``name`` is in use (released when ``admin`` closes)."""
    got = await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", _int4(LOCK_CLASS), _int4(_lock_key(name)),
                               timeout=SQL_TIMEOUT)
    if not got:
        raise ActionError(f'another rehearsal is using "{name}" right now (started the same second): wait for it')


# --- disk space ------------------------------------------------------------------------------------------


async def server_free_bytes(admin: asyncpg.Connection) -> tuple[int | None, str]:
    """Free bytes where the server keeps its data, or (None, why not).

    PostgreSQL has no SQL function for free disk space, so this can only be measured when the
    server runs on this machine: its data directory must be readable here, with a postmaster.pid
    naming the port and start time of the server we are connected to. A remote server (the usual
    case for production) cannot be checked from here; the caller says so in its report.
    """
    try:
        data_dir = str(await admin.fetchval("SHOW data_directory", timeout=SQL_TIMEOUT))
    except asyncpg.InsufficientPrivilegeError:
        return None, "reading data_directory needs superuser or pg_read_all_settings"
    port = int(await admin.fetchval("SHOW port", timeout=SQL_TIMEOUT))
    started = float(await admin.fetchval("SELECT extract(epoch FROM pg_postmaster_start_time())", timeout=SQL_TIMEOUT))
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        same = len(lines) > 3 and int(lines[3]) == port and abs(int(lines[2]) - started) <= 2
    except (OSError, ValueError):
        same = False
    if not same:
        return None, "the server does not run on this machine (PostgreSQL cannot report free disk space over SQL)"
    return shutil.disk_usage(data_dir).free, f"free space in {data_dir}"


async def _check_disk(admin: asyncpg.Connection, server: str, live_bytes: int, margin: float,
                      free_bytes: Callable[[], int | None] | None) -> str:
    if free_bytes is not None:
        free, where = free_bytes(), "measured by the caller"
    else:
        free, where = await server_free_bytes(admin)
    need = int(live_bytes * margin)
    if free is None:
        return f"not checked: {where}; the copy needs about {humanize.size(need)}"
    if free < need:
        raise ActionError(
            f"only {humanize.size(free)} free on {server} ({where}) but the copy needs about {humanize.size(need)} "
            f"(the database is {humanize.size(live_bytes)}, margin {margin:g}): free some space, or set "
            "rehearsal_url to a server with room; nothing was restored", code="disk_space")
    return f"{humanize.size(free)} free on {server}, the copy needs about {humanize.size(need)}"


# --- measuring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rel:
    name: str
    kind: str
    filenode: int
    table: int  # the table's oid (itself for a table)


@dataclass
class _Snap:
    locks: set[tuple[int, str]]
    rels: dict[int, _Rel]
    stats: dict[int, tuple[int, ...]]  # seq_scan, seq_tup_read, idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_del


_SNAPSHOT = """
SELECT
  (SELECT coalesce(json_agg(json_build_array(l.relation::int8, l.mode)), '[]') FROM pg_locks l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))::text AS locks,
  (SELECT coalesce(json_agg(json_build_array(c.oid::int8, c.oid::regclass::text, c.relkind, c.relfilenode::int8,
                                             coalesce(i.indrelid, c.oid)::int8)), '[]')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
    WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND n.nspname <> 'information_schema'
      AND n.nspname NOT LIKE 'pg\\_%')::text AS relations,
  (SELECT coalesce(json_agg(json_build_array(s.relid::int8, s.seq_scan, s.seq_tup_read, coalesce(s.idx_tup_fetch, 0),
                                             s.n_tup_ins, s.n_tup_upd, s.n_tup_del)), '[]')
    FROM {stats} s)::text AS stats
"""
_SNAPSHOT_XACT = _SNAPSHOT.format(stats="pg_stat_xact_user_tables")
_SNAPSHOT_CUMULATIVE = _SNAPSHOT.format(stats="pg_stat_user_tables")
_SAMPLE = """
SELECT (SELECT coalesce(json_agg(json_build_array(l.relation::int8, l.mode)), '[]') FROM pg_locks l
         WHERE l.pid = $1 AND l.locktype = 'relation' AND l.granted)::text AS locks,
       (SELECT p.phase FROM pg_stat_progress_create_index p WHERE p.pid = $1) AS phase
"""
_TX_CONTROL = re.compile(r"^(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b", re.I)
_ENDS_TX = re.compile(r"^(?:COMMIT|END|ROLLBACK|ABORT)\b(?!\s+TO\b)", re.I)
_MAY_COMMIT = re.compile(r"^(?:CALL|DO)\b", re.I)
_ZERO = (0, 0, 0, 0, 0, 0)


def _parse(row: asyncpg.Record) -> _Snap:
    return _Snap(
        locks={(int(o), str(m)) for o, m in json.loads(row["locks"])},
        rels={int(r[0]): _Rel(str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in json.loads(row["relations"])},
        stats={int(s[0]): tuple(int(x or 0) for x in s[1:]) for s in json.loads(row["stats"])})


def _trim(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= STATEMENT_CHARS else one_line[: STATEMENT_CHARS - 1] + "…"


def _label(index: int, total: int, st: Statement) -> str:
    return f"statement {index} of {total} (line {st.line}): {st.first_line[:200]}"


class _Sampler:
    """A second connection reading ``pg_locks`` and index build progress of the applying session."""

    def __init__(self, conn: asyncpg.Connection, pid: int, interval: float) -> None:
        self.conn, self.pid, self.interval = conn, pid, interval
        self.seen: dict[tuple[int, str], float] = {}
        self.phases: list[str] = []

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                row = await self.conn.fetchrow(_SAMPLE, self.pid, timeout=SQL_TIMEOUT)
            except Exception as exc:  # watching is best effort: never break the rehearsal
                log.debug("lock sampling failed: %s", exc)
                return
            for oid, mode in json.loads(row["locks"]):
                self.seen.setdefault((int(oid), str(mode)), t)
            if row["phase"] and row["phase"] not in self.phases:
                self.phases.append(row["phase"])
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, self.interval - (time.monotonic() - t)))
            except TimeoutError:
                pass

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[_Sampler]:
        self.seen, self.phases = {}, []
        stop = asyncio.Event()
        task = asyncio.create_task(self._loop(stop))
        try:
            yield self
        finally:
            stop.set()  # no cancel: a query cut in the middle would leave the connection busy
            try:
                await asyncio.wait_for(task, SQL_TIMEOUT)
            except Exception:
                task.cancel()


class _Holds:
    """Locks taken in one transaction, held until its COMMIT or ROLLBACK.

    The clock counts only the time the server spent on the migration's own statements and the
    COMMIT, not the rehearsal's measuring queries in between: a deploy sends the file in one go,
    so that is how long the locks are held there.
    """

    def __init__(self) -> None:
        self.clock = 0.0
        self.pending: list[tuple[LockHeld, float]] = []

    def add(self, lock: LockHeld, since: float) -> None:
        self.pending.append((lock, since))

    def tick(self, seconds: float) -> None:
        self.clock += seconds

    def release(self, seconds: float = 0.0) -> None:
        """The transaction ended, its COMMIT/ROLLBACK having taken ``seconds``."""
        self.clock += seconds
        for lock, since in self.pending:
            lock.held_for = self.clock - since
        self.pending.clear()


class _StatementFailed(Exception):
    def __init__(self, exc: asyncpg.PostgresError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _names(*snaps: _Snap) -> dict[int, _Rel]:
    merged: dict[int, _Rel] = {}
    for snap in snaps:
        merged.update(snap.rels)
    return merged


def _lock_held(oid: int, mode: str, rels: dict[int, _Rel], base: dict[int, _Rel], how: str) -> LockHeld | None:
    rel = rels.get(oid)
    if rel is None:  # a catalog, a sequence, a toast table
        return None
    table = rels.get(rel.table, rel).name
    return LockHeld(rel.name, table, mode_name(mode), existed=oid in base, how=how)


def _fill_changes(sr: StatementResult, before: _Snap, after: _Snap, phases: list[str]) -> None:
    """Rewrites, scans, rows, index builds, created and dropped relations between two snapshots."""
    sr.created = [r.name for o, r in after.rels.items() if o not in before.rels]
    sr.dropped = [r.name for o, r in before.rels.items() if o not in after.rels]
    for oid, rel in after.rels.items():
        old = before.rels.get(oid)
        if rel.kind in ("i", "I") and (old is None or old.filenode != rel.filenode):
            sr.index_builds.append(rel.name)
        elif rel.kind in ("r", "m") and old is not None and old.filenode != rel.filenode:
            sr.rewritten.append(rel.name)
    read = written = per_scan = 0
    for oid, now in after.stats.items():
        then = before.stats.get(oid, _ZERO)
        delta = [a - b for a, b in zip(now, then, strict=True)]
        if delta[0] > 0:
            per_scan = max(per_scan, delta[1] // delta[0])
            if oid in after.rels:
                sr.scanned.append(after.rels[oid].name)
        read += delta[1] + delta[2]
        written += delta[3] + delta[4] + delta[5]
    sr.rows_read, sr.rows_scanned, sr.rows_written = read, per_scan, written
    sr.index_phases = list(phases)


def _ms(seconds: float | None) -> str:
    return f"'{round((seconds or 0) * 1000)}ms'"


class _Applier:
    """Applies migrations on the copy, statement by statement, measuring each."""

    def __init__(self, conn: asyncpg.Connection, sampler: _Sampler, *, lock_timeout: float,
                 statement_timeout: float | None, retry: RetryPolicy, safe_hold: float, timeout: float) -> None:
        self.conn = conn
        self.sampler = sampler
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.retry = retry
        self.safe_hold = safe_hold
        self.timeout = timeout
        self.flush = conn.get_server_version().major >= 15  # pg_stat_force_next_flush()

    async def _snapshot(self, *, xact: bool) -> _Snap:
        return _parse(await self.conn.fetchrow(_SNAPSHOT_XACT if xact else _SNAPSHOT_CUMULATIVE, timeout=SQL_TIMEOUT))

    async def _timed(self, sql: str, timeout: float = SQL_TIMEOUT) -> float:
        t0 = time.monotonic()
        await self.conn.execute(sql, timeout=timeout)
        return time.monotonic() - t0

    async def _rollback(self) -> float:
        if not self.conn.is_closed() and self.conn.is_in_transaction():
            return await self._timed("ROLLBACK")
        return 0.0

    async def run(self, migration: LocalMigration, *, done_status: str = "applied") -> MigrationResult:
        result = MigrationResult(migration.name, migration.checksum, migration.transactional, safe_hold=self.safe_hold)
        # split and classified before any lock is taken: nothing of ours runs between the statements but measuring
        statements = [(st, classify_quietly(st.text)) for st in split_sql(migration.sql)]
        row_id = await prisma_table.insert_started(self.conn, migration.name, migration.checksum)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            result.statements, result.error = [], None
            try:
                if migration.transactional:
                    await self._transactional(statements, result, prisma_table.finish_sql(row_id))
                else:
                    await self._one_by_one(statements, result)
                break
            except asyncpg.LockNotAvailableError as exc:  # only a transactional file comes back here whole
                await self._rollback()
                delay = backoff_delay(self.retry, attempt)
                if attempt >= self.retry.max_attempts or time.monotonic() - started + delay > self.retry.max_total:
                    result.error = (f"{getattr(exc, 'message', exc)}: could not get its locks within lock_timeout "
                                    f"{self.lock_timeout:g}s on the copy, {attempt} attempt(s)")
                    break
                await asyncio.sleep(delay)
        result.attempts = attempt
        result.duration = time.monotonic() - started
        if result.error:
            result.status = "failed"
            await prisma_table.mark_failed(self.conn, row_id, result.error)
        else:
            result.status = done_status
            if not migration.transactional:
                await prisma_table.mark_finished(self.conn, row_id)
        return result

    async def _execute(self, st: Statement, sr: StatementResult) -> _Sampler:
        """Run the statement while the sampler watches; its wall time goes to ``sr``."""
        async with self.sampler.watching() as sampler:
            t0 = time.monotonic()
            try:
                await self.conn.execute(st.text, timeout=self.timeout)
            except asyncpg.LockNotAvailableError:
                raise
            except asyncpg.PostgresError as exc:
                raise _StatementFailed(exc) from None
            finally:
                sr.wall_time = time.monotonic() - t0
        return sampler

    async def _in_transaction(self, st: Statement, sr: StatementResult, before: _Snap, base: dict[int, _Rel],
                              holds: _Holds) -> _Snap:
        """Run one statement inside the open transaction; the locks it added are read there."""
        since = holds.clock
        try:
            sampler = await self._execute(st, sr)
        finally:
            holds.tick(sr.wall_time)
        after = await self._snapshot(xact=True)
        rels = _names(before, after)
        new: dict[int, list[str]] = {}
        for oid, mode in after.locks - before.locks:
            new.setdefault(oid, []).append(mode)
        for oid, modes in sorted(new.items()):
            top = strongest_mode(modes)
            lock = _lock_held(oid, top, rels, base, "exact") if top else None
            if lock is not None:
                sr.locks.append(lock)
                holds.add(lock, since)
        _fill_changes(sr, before, after, sampler.phases)
        return after

    def _fail(self, result: MigrationResult, sr: StatementResult, st: Statement, total: int,
              exc: asyncpg.PostgresError, tail: str) -> None:
        sr.error = describe_db_error(exc, st.text, st.line)
        sr.error_message = " ".join(str(getattr(exc, "message", None) or exc).split())
        result.error = f"{sr.error}\nFailed at {_label(sr.index, total, st)}{tail}"

    async def _transactional(self, statements: list[tuple[Statement, list[LockEffect]]], result: MigrationResult,
                             finish: str) -> None:
        holds = _Holds()
        await self.conn.execute(f"BEGIN; SET LOCAL lock_timeout = {_ms(self.lock_timeout)}; "
                                f"SET LOCAL statement_timeout = {_ms(self.statement_timeout)}", timeout=SQL_TIMEOUT)
        try:
            snap = await self._snapshot(xact=True)
            base = snap.rels
            for index, (st, expected) in enumerate(statements, 1):
                sr = StatementResult(index, st.line, _trim(st.text), "in the migration's transaction", expected)
                result.statements.append(sr)
                try:
                    snap = await self._in_transaction(st, sr, snap, base, holds)
                except _StatementFailed as failed:
                    holds.release(await self._rollback())
                    self._fail(result, sr, st, len(statements), failed.exc, "; the migration was rolled back")
                    return
            holds.release(await self._timed(f"{finish};\nCOMMIT"))
        except BaseException:
            holds.release()
            await self._rollback()
            raise

    async def _one_by_one(self, statements: list[tuple[Statement, list[LockEffect]]],
                          result: MigrationResult) -> None:
        """A file that cannot run as one transaction: each statement on its own, as deploy runs it."""
        await self.conn.execute(f"SET lock_timeout = {_ms(self.lock_timeout)}; "
                                f"SET statement_timeout = {_ms(self.statement_timeout)}", timeout=SQL_TIMEOUT)
        try:
            base = (await self._snapshot(xact=False)).rels
            file_tx = _FileTransaction()  # the file's own BEGIN … COMMIT, if it has one
            for index, (st, expected) in enumerate(statements, 1):
                sr = StatementResult(index, st.line, _trim(st.text), "", expected)
                result.statements.append(sr)
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        await self._one(st, sr, base, file_tx)
                        break
                    except asyncpg.LockNotAvailableError as exc:
                        in_block = file_tx.snap is not None
                        file_tx.end(await self._rollback())
                        if in_block or attempt >= self.retry.max_attempts:
                            self._fail(result, sr, st, len(statements), exc,
                                       "; the statements before it are committed")
                            return
                        sr.locks = []
                        await asyncio.sleep(backoff_delay(self.retry, attempt))
                    except _StatementFailed as failed:
                        file_tx.end(await self._rollback())
                        self._fail(result, sr, st, len(statements), failed.exc,
                                   "; the statements before it are committed (this file runs outside a transaction)")
                        return
            if self.conn.is_in_transaction():
                file_tx.end(await self._rollback())
                result.error = "the file opened a transaction (BEGIN) without COMMIT; it was rolled back"
        finally:
            if not self.conn.is_closed():
                await self.conn.execute("RESET lock_timeout; RESET statement_timeout", timeout=SQL_TIMEOUT)

    async def _one(self, st: Statement, sr: StatementResult, base: dict[int, _Rel], file_tx: _FileTransaction) -> None:
        """One statement of a non-transactional file."""
        if _TX_CONTROL.match(st.text):
            sr.how = "transaction control"
            await self._execute(st, sr)
            if _ENDS_TX.match(st.text):
                file_tx.end(sr.wall_time)
            elif self.conn.is_in_transaction() and file_tx.snap is None:
                file_tx.begin(await self._snapshot(xact=True))
            return
        if file_tx.snap is not None and self.conn.is_in_transaction():
            sr.how = "in the file's transaction"
            file_tx.snap = await self._in_transaction(st, sr, file_tx.snap, base, file_tx.holds)
            return
        reason = statement_non_transactional_reason(st.text)
        if reason is not None or _MAY_COMMIT.match(st.text):
            sr.how = "outside a transaction"
            await self._sampled(st, sr, base, background=reason is not None and "transaction" not in reason)
            return
        # a statement that may run in a transaction runs in one of its own: its locks are then read exactly
        sr.how = "in its own transaction"
        holds = _Holds()
        try:
            holds.tick(await self._timed("BEGIN"))
            snap = await self._snapshot(xact=True)
            await self._in_transaction(st, sr, snap, base, holds)
            holds.release(await self._timed("COMMIT"))
        finally:
            holds.release(await self._rollback())

    async def _sampled(self, st: Statement, sr: StatementResult, base: dict[int, _Rel], *, background: bool) -> None:
        """Run a statement outside any transaction; its locks are seen by the sampling connection."""
        if self.flush:  # what earlier statements counted becomes visible before we read
            await self.conn.execute("SELECT pg_stat_force_next_flush()", timeout=SQL_TIMEOUT)
        before = await self._snapshot(xact=False)
        if background:  # as deploy does: CONCURRENTLY waits for old transactions, not for a lock queue
            await self.conn.execute("SET lock_timeout = 0", timeout=SQL_TIMEOUT)
        t0 = time.monotonic()
        try:
            sampler = await self._execute(st, sr)
        finally:
            if background and not self.conn.is_closed():
                await self.conn.execute(f"SET lock_timeout = {_ms(self.lock_timeout)}", timeout=SQL_TIMEOUT)
        t1 = t0 + sr.wall_time
        if self.flush:
            await self.conn.execute("SELECT pg_stat_force_next_flush()", timeout=SQL_TIMEOUT)
        after = await self._snapshot(xact=False)
        rels = _names(before, after)
        by_oid: dict[int, dict[str, float]] = {}
        for (oid, mode), seen_at in sampler.seen.items():
            by_oid.setdefault(oid, {})[mode_name(mode)] = seen_at
        for oid, modes in sorted(by_oid.items()):
            top = strongest_mode(list(modes))
            lock = _lock_held(oid, top, rels, base, "sampled") if top else None
            if lock is not None and top is not None:
                lock.held_for = max(0.0, t1 - max(t0, modes[top]))
                sr.locks.append(lock)
        if not sr.locks:  # quicker than one sample: the documentation table's modes
            by_name = {r.name: oid for oid, r in rels.items()}
            for effect in sr.expected:
                if effect.relation in by_name and effect.mode in MODES:
                    lock = _lock_held(by_name[effect.relation], effect.mode, rels, base, "documented")
                    if lock is not None:
                        lock.held_for = sr.wall_time
                        sr.locks.append(lock)
        if not self.flush:
            before.stats, after.stats = {}, {}  # no way to see this statement's counts in time
        _fill_changes(sr, before, after, sampler.phases)
        if not self.flush:
            sr.rows_read = sr.rows_scanned = sr.rows_written = None


class _FileTransaction:
    """The transaction a non-transactional file opens itself (BEGIN … COMMIT)."""

    def __init__(self) -> None:
        self.snap: _Snap | None = None
        self.holds = _Holds()

    def begin(self, snap: _Snap) -> None:
        self.snap, self.holds = snap, _Holds()

    def end(self, seconds: float) -> None:
        self.holds.release(seconds)
        self.snap = None


def classify_quietly(text: str) -> list[LockEffect]:
    """The documentation table's locks for one statement's text (never raises)."""
    try:
        return classify(text).locks
    except ValueError:
        return []


# --- the rehearsal ------------------------------------------------------------------------------------------


@dataclass
class _Live:
    status: MigrationStatus
    size_bytes: int


async def _read_live(url: str, local: list[LocalMigration], *, timeout: float) -> _Live:
    """The live database's migration status and size: two reads, nothing written."""
    async with connection(url, timeout=timeout) as conn:
        status = await status_on(conn, local)
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())", timeout=timeout))
    return _Live(status, size)


def _check_applied(backup_applied: list[str], live_applied: list[str], backup_id: str) -> list[str]:
    """The migrations to catch up on the copy (applied live since the backup); refuse a backup ahead of live."""
    live = set(live_applied)
    ahead = [n for n in backup_applied if n not in live]
    if ahead:
        raise ActionError(f"backup {backup_id} has {', '.join(ahead)} applied, which the live database has not "
                          "(was it restored or resolved since?): rehearse with a newer backup (`--backup ID`, see "
                          "`migrabot backups ENV`)")
    have = set(backup_applied)
    return [n for n in live_applied if n not in have]


async def _quiet_autovacuum(conn: asyncpg.Connection) -> None:
    """Switch autovacuum off on the copy's tables: a VACUUM of freshly restored rows would take locks mid-rehearsal."""
    rows = await conn.fetch(
        "SELECT c.oid::regclass::text AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'",
        timeout=SQL_TIMEOUT)
    if not rows:
        return
    sql = "".join(f"ALTER {'MATERIALIZED VIEW' if r['relkind'] == 'm' else 'TABLE'} {r['name']} "
                  "SET (autovacuum_enabled = off);\n" for r in rows)
    try:
        await conn.execute(f"BEGIN; SET LOCAL lock_timeout = '30s';\n{sql}COMMIT", timeout=300)
    except asyncpg.PostgresError as exc:  # not fatal: the measurements may then include an autovacuum wait
        log.warning("could not switch autovacuum off on the rehearsal copy: %s", exc)
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK", timeout=SQL_TIMEOUT)


async def rehearse(url: str, migrations_dir: Path, backup_dir: Path, env_name: str, *,
                   backup_id: str | None = None, rehearsal_url: str | None = None, lock_timeout: float = 1.0,
                   statement_timeout: float | None = None, retry: RetryPolicy | None = None, jobs: int = 0,
                   free_margin: float = 1.5, connect_timeout: float = 10.0, safe_hold: float = SAFE_HOLD,
                   sample_interval: float = SAMPLE_INTERVAL, on_step: StepCallback | None = None,
                   free_bytes: Callable[[], int | None] | None = None, tool_dirs: list[Path] | None = None,
                   timeout: float = DEFAULT_TIMEOUT, verify_queries: tuple[str, ...] = ()) -> RehearsalResult:
    """Restore a backup of ``env_name`` into a scratch copy and apply the live database's pending migrations there.

    ``url`` is the live database (only read). The copy goes on ``rehearsal_url``'s server when given, else on
    ``url``'s. Raises ActionError when the rehearsal cannot run (no verified backup, a damaged one, not enough
    disk, a failed restore, a live database deploy would refuse); a migration that fails on the copy is a
    result (``result.failed``), not an exception. The copy is dropped in every case.
    """
    retry = retry or RetryPolicy()
    steps_list: list[RehearsalStep] = []
    steps = _Steps(on_step, steps_list)
    local = read_migrations(Path(migrations_dir))
    by_name = {m.name: m for m in local}
    db = database_name(url)
    target = rehearsal_url or url

    async with steps.step("read the live database") as note:
        live = await _read_live(url, local, timeout=connect_timeout)
        refuse_unsafe_state(live.status, env_name)
        if live.status.running:
            raise ActionError(f"a migration is being applied to {env_name} right now "
                              f"({live.status.running[0].describe()}): rehearse when it is done")
        pending = list(live.status.pending)
        note["detail"] = (f"{len(pending)} pending: {', '.join(pending)}" if pending else "nothing pending") + \
            f"; {humanize.size(live.size_bytes)}"

    info: BackupInfo = get_backup(Path(backup_dir), env_name, backup_id or "latest")
    async with steps.step("verify backup") as note:
        problem = await backup_problem(info, tool_dirs=tool_dirs)
        if problem:
            raise ActionError(f"{problem}; nothing was restored. Pick another backup (`migrabot backups {env_name}`)")
        if "applied_migrations" in info.manifest:
            _check_applied(info.applied_migrations, live.status.applied, info.id)
        note["detail"] = f"{info.id}: checksums and archive table of contents are fine"

    started = datetime.now(UTC)
    name = scratch_name(db, started)
    result = RehearsalResult(env_name, db, host_and_port(target), name, info.id, info.created_at, started,
                             pending=pending, checksums={n: by_name[n].checksum for n in pending}, steps=steps_list)
    admin = await _admin(target, timeout=connect_timeout)
    try:
        await _claim(admin, name)
        async with steps.step("drop leftover copies") as note:
            result.leftovers_dropped = await _drop_leftovers(admin, db, keep=name)
            note["detail"] = ", ".join(result.leftovers_dropped) or "none"
        async with steps.step("disk space") as note:
            result.disk_check = note["detail"] = await _check_disk(admin, result.server, live.size_bytes,
                                                                   free_margin, free_bytes)
        try:
            await _on_copy(target, name, info, live, by_name, result, steps, like=None if rehearsal_url else db,
                           live_url=url, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                           retry=retry, jobs=jobs, connect_timeout=connect_timeout, safe_hold=safe_hold,
                           sample_interval=sample_interval, tool_dirs=tool_dirs, timeout=timeout,
                           verify_queries=verify_queries)
        finally:
            await asyncio.shield(_drop_scratch(admin, name, result, steps))
    finally:
        await close_quietly(admin)  # releases the advisory lock
        result.finished_at = datetime.now(UTC)
    return result


async def _drop_scratch(admin: asyncpg.Connection, name: str, result: RehearsalResult, steps: _Steps) -> None:
    try:
        async with steps.step("drop the copy") as note:
            await _drop_database(admin, name)
            result.dropped = True
            note["detail"] = name
    except Exception:
        log.error("could not drop the rehearsal copy %s; the next rehearsal drops it", name, exc_info=True)


async def _on_copy(target: str, name: str, info: BackupInfo, live: _Live, by_name: dict[str, LocalMigration],
                   result: RehearsalResult, steps: _Steps, *, like: str | None, live_url: str, lock_timeout: float,
                   statement_timeout: float | None, retry: RetryPolicy, jobs: int, connect_timeout: float,
                   safe_hold: float, sample_interval: float, tool_dirs: list[Path] | None, timeout: float,
                   verify_queries: tuple[str, ...] = ()) -> None:
    async with steps.step("restore") as note:
        t0 = time.monotonic()
        try:
            result.restore_detail = await restore_into_new_database(target, name, info, like=like, jobs=jobs,
                                                                    tool_dirs=tool_dirs, timeout=timeout)
        except ActionError as exc:
            hint = " (grant the role CREATEDB, or set rehearsal_url)" if exc.code == "privilege" else ""
            raise ActionError(f"the rehearsal could not restore backup {info.id}: {exc.message}{hint}",
                              code=exc.code) from None
        result.restore_seconds = time.monotonic() - t0
        note["detail"] = f"into {name} in {result.restore_seconds:.1f}s: {result.restore_detail}"
    # the live URL's search_path (Prisma's ?schema=) applies on the copy too
    settings = asyncpg_dsn(live_url)[1]
    scratch_url = with_database(target, name)
    conn = await connect(scratch_url, timeout=connect_timeout, application_name=APPLICATION, server_settings=settings)
    watch = await connect(scratch_url, timeout=connect_timeout, application_name=APPLICATION + "-watch")
    try:
        result.restored_bytes = int(await conn.fetchval("SELECT pg_database_size(current_database())",
                                                        timeout=SQL_TIMEOUT))
        async with steps.step("analyze") as note:
            await _quiet_autovacuum(conn)
            t0 = time.monotonic()
            await conn.execute("ANALYZE", timeout=timeout)
            result.analyze_seconds = time.monotonic() - t0
            note["detail"] = f"{result.analyze_seconds:.1f}s"
        copy_status = await status_on(conn, list(by_name.values()))
        catch_up = _check_applied(copy_status.applied, live.status.applied, info.id)
        missing = [n for n in catch_up if n not in by_name]
        if missing:
            raise ActionError(f"the live database has {', '.join(missing)} applied since backup {info.id}, but the "
                              "migrations folder lacks the file(s): rehearse with a newer backup or restore the files")
        if (catch_up or result.pending) and not copy_status.table_exists:
            await prisma_table.ensure_table(conn)
        applier = _Applier(conn, _Sampler(watch, conn.get_server_pid(), sample_interval), lock_timeout=lock_timeout,
                           statement_timeout=statement_timeout, retry=retry, safe_hold=safe_hold, timeout=timeout)
        for migration_name in catch_up:
            async with steps.step(f"catch up {migration_name}"):
                done = await applier.run(by_name[migration_name], done_status="caught up")
                if done.status == "failed":
                    raise ActionError(f"{migration_name}, applied on the live database after backup {info.id}, "
                                      f"fails on the copy: {done.verdict}; rehearse with a newer backup")
            result.caught_up.append(migration_name)
        for migration_name in result.pending:
            if result.failed is not None:
                result.migrations.append(MigrationResult(migration_name, by_name[migration_name].checksum,
                                                         by_name[migration_name].transactional, safe_hold=safe_hold))
                continue
            async with steps.step(f"apply {migration_name}") as note:
                done = await applier.run(by_name[migration_name])
                result.migrations.append(done)
                note["detail"] = done.verdict
        if verify_queries and result.failed is None:
            async with steps.step("verify queries") as note:
                # the same queries the real run's verification asks, so its answers can be compared with these
                answers = await run_verify_queries(scratch_url, verify_queries, timeout=connect_timeout,
                                                   statement_timeout=statement_timeout)
                result.verify = [{"query": a.query, "value": a.value, "error": a.error} for a in answers]
                note["detail"] = "; ".join(a.describe() for a in answers)
    finally:
        await close_quietly(watch)
        await close_quietly(conn)


def stale_reason(rehearsed: Mapping[str, str], *, pending: Mapping[str, str], rehearsed_backup: str | None = None,
                 newest_backup: str | None = None) -> str | None:
    """Why a rehearsal no longer describes what a run would apply, or None while it is fresh.

    ``rehearsed``: the checksums it applied (``RehearsalResult.checksums``); ``pending``: the pending
    migrations' checksums now. With ``newest_backup``, a newer backup than ``rehearsed_backup`` makes
    it stale too (call it before the run takes its own backup).

    >>> stale_reason({"01_a": "c1"}, pending={"01_a": "c1"}) is None
    True
    >>> stale_reason({"01_a": "c1"}, pending={"01_a": "c2"})
    '01_a changed since the rehearsal'
    >>> stale_reason({"01_a": "c1"}, pending={"01_a": "c1", "02_b": "c3"})
    'not rehearsed: 02_b'
    >>> stale_reason({}, pending={}, rehearsed_backup="20240101_000000", newest_backup="20240102_000000")
    'backup 20240102_000000 is newer than the rehearsed 20240101_000000'
    """
    changed = [n for n, checksum in pending.items() if n in rehearsed and rehearsed[n] != checksum]
    if changed:
        return f"{', '.join(changed)} changed since the rehearsal"
    missing = [n for n in pending if n not in rehearsed]
    if missing:
        return f"not rehearsed: {', '.join(missing)}"
    if newest_backup and rehearsed_backup and newest_backup != rehearsed_backup:
        return f"backup {newest_backup} is newer than the rehearsed {rehearsed_backup}"
    return None


async def rehearse_environment(env: Environment, *, backup_id: str | None = None,
                               on_step: StepCallback | None = None, **kwargs: Any) -> RehearsalResult:
    """:func:`rehearse` with the environment's own settings (``rehearsal_url``, timeouts, retries, jobs).

    The result is kept (:func:`save_rehearsal`), so the CLI and the bot both see the latest one.
    """
    result = await rehearse(
        env.migration_url, env.migrations_dir, env.backup_dir, env.name, backup_id=backup_id,
        rehearsal_url=env.rehearsal_url, lock_timeout=env.lock_timeout,
        statement_timeout=env.statement_timeout, retry=env.retry, jobs=env.backup_jobs,
        free_margin=env.backup_free_margin, connect_timeout=env.connect_timeout, on_step=on_step,
        verify_queries=env.verify_queries, **kwargs)
    try:
        save_rehearsal(env.backup_dir, env.name, result)
    except OSError as exc:  # the rehearsal itself stands; only its record for the checklist is lost
        log.warning("could not keep the rehearsal of %s in %s: %s", env.name, rehearsals_dir(env.backup_dir, env.name),
                    exc)
    return result


# --- the kept results: <backup_dir>/<env>/rehearsals/<timestamp>.json ---------------------------------------

KEEP_REHEARSALS = 5
_KEPT = re.compile(r"\d{8}T\d{6}(?:\.\d+)?Z\.json")


def rehearsals_dir(backup_dir: Path, env_name: str) -> Path:
    return Path(backup_dir) / env_name / "rehearsals"


def save_rehearsal(backup_dir: Path, env_name: str, result: RehearsalResult, *, keep: int = KEEP_REHEARSALS) -> Path:
    """Write ``result.to_dict()`` as ``<backup_dir>/<env>/rehearsals/<started>.json``; keep the newest ``keep``.

    Written aside and renamed, so a reader never sees half a file.
    """
    folder = rehearsals_dir(backup_dir, env_name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.started_at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}.json"
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    tmp.replace(path)
    for old in _kept(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def _kept(folder: Path) -> list[Path]:
    """The kept results, newest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _KEPT.fullmatch(p.name)), key=lambda p: p.name, reverse=True)


def latest_rehearsal(backup_dir: Path, env_name: str) -> dict[str, Any] | None:
    """The newest kept rehearsal of ``env_name`` (``RehearsalResult.to_dict()``), or None.

        >>> latest_rehearsal(Path("/nonexistent"), "prod") is None
        True
    """
    for path in _kept(rehearsals_dir(backup_dir, env_name)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: an older one still tells something
        if isinstance(data, dict):
            return data
    return None
