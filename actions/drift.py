"""Drift: is what is in the database what the migrations say should be there?

    >>> report = await check_drift(env.migration_url, env.migrations_dir, env_name="prod")   # doctest: +SKIP
    >>> report.in_sync, report.status                                                      # doctest: +SKIP
    (False, 'drifted')
    >>> print(report.describe())                                                           # doctest: +SKIP
    prod: DRIFTED (1 difference)
    table `users`:
      - `users.email`: migrations say `text NOT NULL`, database has `varchar(255) NULL`
    ...

Three comparisons, in one :class:`DriftReport`:

1. **files vs ledger** (``actions.status``): migrations edited after being applied, applied but
   absent from the folder, failed; rolled-back ones are listed as notes.
2. **expected vs live schema**: every migration recorded as applied is run, in ledger order and
   one at a time, in a scratch database ``<db>__shadow_<YYYYMMDDHHMMSS>`` (on the same server, or
   on ``shadow_url``), noting which migration created each object; then the two catalogs
   (``actions.catalog``) are compared object by object (``actions.schema_diff``). The shadow
   database is dropped on every path; one left by a crash (older than :data:`STALE_AFTER`, no
   session on it) is dropped by the next check. When objects exist only in the database and a
   pending migration creates exactly those, the report says to ``resolve --applied`` it.
3. **schema.prisma vs migrations**, only when a ``prisma`` CLI is on PATH (``prisma migrate
   diff``); otherwise "skipped: no Prisma CLI".

:func:`write_fix_migration` writes the generated SQL as a new migration folder for a person to
review and run the normal way: nothing here ever changes the live database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from actions.blockers import BlockerWatch
from actions.catalog import Catalog, Identity, all_identities, new_identities, read_catalog
from actions.db import close_quietly, connect, connection, database_name, quote_ident
from actions.errors import ActionError
from actions.migrations_dir import LocalMigration, read_migrations
from actions.restore import fit_name
from actions.schema_diff import Difference, compare_catalogs
from actions.sql_runner import RunSettings, run_atomic, run_statements
from actions.status import MigrationStatus, status_on
from bot.config import Environment, RetryPolicy
from bot.redact import redact

log = logging.getLogger(__name__)

SHADOW_SUFFIX = "__shadow_"
STALE_AFTER = 300.0  # seconds: an older shadow database with no session on it was left by a crash
SQL_TIMEOUT = 30.0
DROP_TIMEOUT = 120.0
PRISMA_TIMEOUT = 180.0
_STAMP = re.compile(r"\d{14}")


# --- the report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileProblem:
    """A files-vs-ledger finding: ``kind`` is "modified", "missing", "failed" or "rolled back"."""

    kind: str
    migration: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "migration": self.migration, "message": self.message}


@dataclass(frozen=True)
class Unrecorded:
    """A pending migration whose objects are all in the database already: it ran, but was not recorded."""

    migration: str
    objects: tuple[str, ...]
    command: str

    @property
    def message(self) -> str:
        shown = ", ".join(self.objects[:5]) + (f" and {len(self.objects) - 5} more" if len(self.objects) > 5 else "")
        return (f"migration `{self.migration}` is not recorded as applied but its effects are present ({shown}): "
                f"if it was run by hand, record it with `{self.command}`")

    def to_dict(self) -> dict[str, Any]:
        return {"migration": self.migration, "objects": list(self.objects), "command": self.command,
                "message": self.message}


@dataclass(frozen=True)
class PrismaCheck:
    """schema.prisma vs the migrations: status "skipped", "in_sync", "drifted" or "error"."""

    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


@dataclass
class DriftReport:
    """Everything one drift check found; ``to_dict()`` for JSON, ``describe()`` for people."""

    environment: str
    database: str
    files: list[FileProblem] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    unrecorded: list[Unrecorded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None  # why the schema could not be compared
    prisma: PrismaCheck = field(default_factory=lambda: PrismaCheck("skipped", "not run"))
    applied: list[str] = field(default_factory=list)  # the migrations the expected schema was built from
    shadow_database: str | None = None
    leftovers_dropped: list[str] = field(default_factory=list)
    expected_objects: int = 0
    duration: float = 0.0

    @property
    def drifted(self) -> bool:
        """Something differs (files, schema, unrecorded effects or schema.prisma)."""
        return bool([f for f in self.files if f.kind != "rolled back"] or self.differences or self.unrecorded
                    or self.prisma.status == "drifted")

    @property
    def in_sync(self) -> bool:
        return not self.drifted and self.problem is None

    @property
    def status(self) -> str:
        """ "in sync", "drifted" or "could not check" (nothing found, but the schema could not be compared)."""
        if self.drifted:
            return "drifted"
        return "could not check" if self.problem else "in sync"

    @property
    def exit_code(self) -> int:
        """0 in sync, 1 drifted, 2 could not check."""
        return {"in sync": 0, "drifted": 1}.get(self.status, 2)

    def groups(self) -> dict[str, list[Difference]]:
        """The schema differences by the object they belong to ("table `users`": its columns, indexes …)."""
        grouped: dict[str, list[Difference]] = {}
        for d in self.differences:
            grouped.setdefault(d.group, []).append(d)
        return grouped

    def fix_sql(self) -> str:
        """The generated statements, in report order; empty when nothing could be generated."""
        return "\n".join(d.fix_sql for d in self.differences if d.fix_sql)

    def by_hand(self) -> list[Difference]:
        return [d for d in self.differences if not d.fix_sql]

    def count(self) -> int:
        return (len([f for f in self.files if f.kind != "rolled back"]) + len(self.differences)
                + len(self.unrecorded) + (self.prisma.status == "drifted"))

    def lines(self) -> list[str]:
        """The findings as report lines (no header), grouped by object."""
        out: list[str] = []
        if self.files:
            out.append("migration files vs the ledger (_prisma_migrations):")
            out.extend(f"  - {f.message}" for f in self.files)
        if self.problem:
            out.append(f"schema not compared: {self.problem}")
        for u in self.unrecorded:
            out.append(u.message)
        for group, diffs in self.groups().items():
            out.append(f"{group}:")
            for d in diffs:
                out.append(f"  - {d.message}")
                if d.fix_sql:
                    out.extend(f"      {line}" for line in d.fix_sql.splitlines())
                else:
                    out.append(f"      by hand: {d.by_hand}")
        if self.prisma.status == "drifted":
            out.append(f"schema.prisma vs the migrations: {self.prisma.detail}")
        return out

    def describe(self) -> str:
        """The whole report as text (what ``migrabot drift ENV`` prints)."""
        n = self.count()
        if self.status == "in sync":
            head = (f"{self.environment}: in sync ({len(self.applied)} applied migration(s), "
                    f"{self.expected_objects} objects compared)")
        elif self.status == "drifted":
            head = f"{self.environment}: DRIFTED ({n} difference{'s' if n != 1 else ''})"
        else:
            head = f"{self.environment}: could not check the schema"
        lines = [head, *self.lines()]
        if self.prisma.status != "drifted":
            lines.append(f"schema.prisma vs the migrations: {self.prisma.detail}")
        lines.extend(f"note: {n}" for n in self.notes)
        if self.fix_sql():
            lines.append(f"write these statements as a migration to review: migrabot drift {self.environment} "
                         "--write-fix prisma/migrations")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "database": self.database, "status": self.status,
            "in_sync": self.in_sync, "drifted": self.drifted, "problem": self.problem,
            "files": [f.to_dict() for f in self.files],
            "differences": [d.to_dict() for d in self.differences],
            "groups": {g: [d.message for d in ds] for g, ds in self.groups().items()},
            "unrecorded": [u.to_dict() for u in self.unrecorded],
            "prisma": self.prisma.to_dict(), "notes": list(self.notes), "applied": list(self.applied),
            "expected_objects": self.expected_objects, "shadow_database": self.shadow_database,
            "leftovers_dropped": list(self.leftovers_dropped), "fix_sql": self.fix_sql(),
            "duration": round(self.duration, 3),
        }


def file_problems(status: MigrationStatus) -> list[FileProblem]:
    """Files vs ledger from a migration status, as report lines."""
    found = [FileProblem("modified", n, f"`{n}` was edited after being applied (its checksum differs): restore "
                                        "the original file and put the change in a new migration")
             for n in status.modified]
    found += [FileProblem("missing", n, f"`{n}` is recorded as applied but absent from the migrations folder")
              for n in status.missing]
    found += [FileProblem("failed", f.name, f"`{f.name}` failed and is not resolved: `migrabot resolve ENV "
                                            f"--rolled-back {f.name}` or `--applied {f.name}`")
              for f in status.failed]
    found += [FileProblem("rolled back", n, f"`{n}` is marked rolled back (pending again, not applied)")
              for n in status.rolled_back]
    return found


# --- shadow database names and life cycle ---------------------------------------------------------------


def shadow_name(db: str, now: datetime) -> str:
    """``<db>__shadow_<UTC YYYYMMDDHHMMSS>`` within 63 bytes (a long name is cut, the suffix kept).

    >>> shadow_name("app", datetime(2024, 1, 15, 9, 30, 0))
    'app__shadow_20240115093000'
    >>> len(shadow_name("x" * 80, datetime(2024, 1, 15)).encode())
    63
    """
    return fit_name(db, SHADOW_SUFFIX + now.strftime("%Y%m%d%H%M%S"))


def _shadow_prefix(db: str) -> str:
    return shadow_name(db, datetime(2000, 1, 1))[:-14]


def _stamp_of(name: str, prefix: str) -> datetime | None:
    rest = name[len(prefix):]
    if not name.startswith(prefix) or not _STAMP.fullmatch(rest):
        return None
    try:
        return datetime.strptime(rest, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def shadow_server_url(live_url: str, shadow_url: str | None) -> str:
    """Where shadow databases are made: ``shadow_url`` when given, else the live database's server."""
    return shadow_url or live_url


def shadow_database_url(server_url: str, name: str, live_url: str) -> str:
    """A URL to database ``name`` on ``server_url``'s server, with the live URL's ``schema`` parameter.

    The migrations must run with the search_path they run with live (Prisma's ``?schema=``).

    >>> shadow_database_url("postgresql://u@other:5432/postgres", "app__shadow_1", "postgresql://u@db/app?schema=s")
    'postgresql://u@other:5432/app__shadow_1?schema=s'
    """
    parts = urlsplit(server_url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    live_schema = dict(parse_qsl(urlsplit(live_url).query)).get("schema")
    own_schema = dict(parse_qsl(parts.query)).get("schema")
    if live_schema or own_schema:
        params.append(("schema", live_schema or own_schema or ""))
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, urlencode(params), parts.fragment))


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    """Drop ``name``, ending its sessions first (WITH (FORCE) on PostgreSQL 13+)."""
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        name, timeout=SQL_TIMEOUT)
    force = " WITH (FORCE)" if admin.get_server_version().major >= 13 else ""
    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}", timeout=DROP_TIMEOUT)


async def drop_leftover_shadows(admin: asyncpg.Connection, db: str, *, now: datetime | None = None,
                                stale_after: float = STALE_AFTER) -> list[str]:
    """Drop shadow databases of ``db`` older than ``stale_after`` seconds with no session: a crashed check's."""
    now = now or datetime.now(UTC)
    prefix = _shadow_prefix(db)
    rows = await admin.fetch(
        "SELECT d.datname, EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) AS busy "
        "FROM pg_database d WHERE starts_with(d.datname, $1)", prefix, timeout=SQL_TIMEOUT)
    dropped = []
    for r in rows:
        stamp = _stamp_of(r["datname"], prefix)
        if stamp is None or r["busy"] or now - stamp < timedelta(seconds=stale_after):
            continue
        try:
            await _drop(admin, r["datname"])
        except asyncpg.PostgresError as exc:  # another check dropping it at the same moment is fine
            log.warning("could not drop the leftover shadow database %s: %s", r["datname"], exc)
            continue
        log.info("dropped %s, a shadow database left by an interrupted drift check", r["datname"])
        dropped.append(r["datname"])
    return dropped


@contextlib.asynccontextmanager
async def shadow_database(live_url: str, shadow_url: str | None = None, *, timeout: float = 10.0,
                          stale_after: float = STALE_AFTER) -> AsyncIterator[tuple[str, str, list[str]]]:
    """``async with shadow_database(url) as (name, url, leftovers):`` an empty scratch database, always dropped.

    ``leftovers`` are the stale shadow databases of earlier, crashed checks that were dropped first.
    """
    server = shadow_server_url(live_url, shadow_url)
    db = database_name(live_url)
    admin = await connect(server, timeout=timeout)
    name = ""
    try:
        leftovers = await drop_leftover_shadows(admin, db, stale_after=stale_after)
        name = await _create_shadow(admin, db)
        try:
            yield name, shadow_database_url(server, name, live_url), leftovers
        finally:
            # shielded: a cancelled check (Ctrl-C, a Slack timeout) still drops its scratch database
            await asyncio.shield(_drop_quietly(admin, server, name, timeout))
    finally:
        await close_quietly(admin)


async def _create_shadow(admin: asyncpg.Connection, db: str) -> str:
    for _ in range(3):
        name = shadow_name(db, datetime.now(UTC))
        try:
            try:
                # the default template (template1), as the live database was most likely made
                await admin.execute(f"CREATE DATABASE {quote_ident(name)}", timeout=DROP_TIMEOUT)
            except asyncpg.ObjectInUseError:  # someone is connected to template1: the pristine one then
                await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0", timeout=DROP_TIMEOUT)
            return name
        except asyncpg.DuplicateDatabaseError:  # another check started this same second
            await asyncio.sleep(1.0)
        except asyncpg.InsufficientPrivilegeError:
            raise ActionError(
                "the drift check builds the expected schema in a scratch database, but this role may not create "
                "databases: grant it CREATEDB, or set shadow_url for this environment to a server where it may",
                code="privilege") from None
        except asyncpg.PostgresError as exc:
            raise ActionError(f"could not create the shadow database {name}: {exc}; check the server's "
                              "template1 database and free disk space") from None
    raise ActionError("three drift checks of this database started in the same seconds; try again")


async def _drop_quietly(admin: asyncpg.Connection, server: str, name: str, timeout: float) -> None:
    try:
        if admin.is_closed():
            admin = await connect(server, timeout=timeout)
        await _drop(admin, name)
    except Exception:
        log.error("could not drop the shadow database %s; the next drift check drops it, or DROP DATABASE it "
                  "by hand", name, exc_info=True)


# --- building the expected schema -------------------------------------------------------------------------


@dataclass
class _Built:
    created_by: dict[Identity, str] = field(default_factory=dict)  # object → first migration that showed it
    baseline: set[Identity] = field(default_factory=set)  # what an empty database already has
    failure: str | None = None
    mark: int = 0


async def _apply(conn: asyncpg.Connection, watch: BlockerWatch, migration: LocalMigration,
                 settings: RunSettings) -> str | None:
    """Run one migration as deploy does (one transaction, or statement by statement); its error or None."""
    if migration.transactional:
        outcome = await run_atomic(conn, migration.sql, name=migration.name, settings=settings, watch=watch)
    else:
        outcome = await run_statements(conn, migration.sql, name=migration.name, settings=settings, watch=watch)
    return None if outcome.ok else (outcome.logs or "unknown error")


async def _apply_all(conn: asyncpg.Connection, watch: BlockerWatch, migrations: list[LocalMigration],
                     settings: RunSettings, built: _Built) -> dict[str, set[Identity]]:
    """Apply ``migrations`` in order, noting what each creates; stops at the first failure."""
    introduced: dict[str, set[Identity]] = {}
    for migration in migrations:
        error = await _apply(conn, watch, migration, settings)
        if error is not None:
            built.failure = f"`{migration.name}` fails on an empty database: {' '.join(error.split())}"
            break
        found, built.mark = await new_identities(conn, built.mark)
        new = {i for i in found if i not in built.created_by and i not in built.baseline}
        for identity in new:
            built.created_by[identity] = migration.name
        introduced[migration.name] = new
    return introduced


def _unrecorded(pending: list[str], introduced: dict[str, set[Identity]], live: set[Identity],
                differences: list[Difference], env_name: str) -> tuple[list[Unrecorded], list[Difference]]:
    """Pending migrations whose every object is in the database; the differences they explain are removed."""
    found: list[Unrecorded] = []
    explained: set[Identity] = set()
    extra = {d.identity: d for d in differences if d.change == "extra"}
    for name in pending:
        objects = introduced.get(name) or set()
        if not objects or not objects <= live or not objects & extra.keys():
            continue
        shown = tuple(sorted(f"{extra[i].kind} `{extra[i].name}`" for i in objects if i in extra))
        found.append(Unrecorded(name, shown, f"migrabot resolve {env_name} --applied {name}"))
        explained |= objects
    return found, [d for d in differences if not (d.change == "extra" and d.identity in explained)]


# --- the check --------------------------------------------------------------------------------------------


async def check_drift(url: str, migrations_dir: Path, *, env_name: str = "ENV", shadow_url: str | None = None,
                      connect_timeout: float = 10.0, statement_timeout: float | None = None,
                      prisma: bool = True, stale_after: float = STALE_AFTER) -> DriftReport:
    """Compare the files, the ledger and the live schema of the database at ``url``; changes nothing there.

    Raises ActionError only when the live database cannot be read (connection, permissions) or the
    migrations folder is unusable; every other problem is in the report (``status`` "could not check").
    """
    started = time.monotonic()
    migrations_dir = Path(migrations_dir)
    local = read_migrations(migrations_dir)
    report = DriftReport(environment=env_name, database=database_name(url))
    live_view: asyncio.Future[tuple[Catalog, set[Identity]]] = asyncio.get_running_loop().create_future()
    builder: asyncio.Task[None] | None = None
    async with connection(url, timeout=connect_timeout) as live:
        # the ledger and the schema from one snapshot: a deploy finishing meanwhile cannot look like drift
        async with live.transaction(isolation="repeatable_read", readonly=True):
            status = await status_on(live, local)
            if not status.missing:
                # the shadow is built while the live catalog is read: the check costs little more than the build
                builder = asyncio.create_task(_compare_schema(
                    report, url, status, live_view, shadow_url=shadow_url, timeout=connect_timeout,
                    statement_timeout=statement_timeout, stale_after=stale_after))
            try:
                actual = await read_catalog(live)
                live_view.set_result((actual, await all_identities(live) if status.pending else set()))
            except BaseException:
                if builder is not None:  # cancelled, it still drops its shadow database on the way out
                    builder.cancel()
                    with contextlib.suppress(BaseException):
                        await builder
                raise
    report.files = [f for f in file_problems(status) if f.kind != "rolled back"]
    report.notes += [f"`{n}` is marked rolled back (pending again, not applied)" for n in status.rolled_back]
    report.applied = list(status.applied)
    if builder is None:
        report.problem = ("the expected schema cannot be built: migration(s) "
                          f"{', '.join(f'`{n}`' for n in status.missing)} are recorded as applied but absent "
                          "from the folder; restore them from version control")
    else:
        try:
            await builder
        except ActionError as exc:  # the shadow could not be made or reached: the other findings still count
            report.problem = f"the expected schema could not be built: {exc.message}"
    report.prisma = (await prisma_check(url, migrations_dir, shadow_url=shadow_url, timeout=connect_timeout)
                     if prisma else PrismaCheck("skipped", "skipped: not asked for"))
    report.duration = time.monotonic() - started
    return report


async def _compare_schema(report: DriftReport, url: str, status: MigrationStatus,
                          live_view: asyncio.Future[tuple[Catalog, set[Identity]]], *, shadow_url: str | None,
                          timeout: float, statement_timeout: float | None, stale_after: float) -> None:
    by_name = status.local_by_name()
    applied = [by_name[n] for n in status.applied]
    pending = [by_name[n] for n in status.pending]
    settings = RunSettings(lock_timeout=60.0, statement_timeout=statement_timeout,
                           retry=RetryPolicy(max_attempts=1))
    async with shadow_database(url, shadow_url, timeout=timeout, stale_after=stale_after) as (name, shadow, gone):
        report.shadow_database, report.leftovers_dropped = name, gone
        conn = await connect(shadow, timeout=timeout)
        # nobody else uses the shadow database, so nothing can block a migration there: the watch never polls
        # (its polling task can also miss its cancellation on Python 3.11 and hang the migration's end)
        watch = BlockerWatch(shadow, timeout=timeout, interval=24 * 3600.0)
        try:
            built = _Built()
            schema = dict(parse_qsl(urlsplit(url).query)).get("schema")
            if schema:  # Prisma creates the schema of ?schema= before the first migration; so does the shadow
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", timeout=SQL_TIMEOUT)
            built.baseline, built.mark = await new_identities(conn, None)
            await _apply_all(conn, watch, applied, settings, built)
            if built.failure:
                report.problem = f"the migrations themselves do not apply cleanly: {built.failure}"
                return
            expected = await read_catalog(conn)
            report.expected_objects = expected.object_count()
            actual, live_ids = await live_view
            differences = compare_catalogs(expected, actual, created_by=built.created_by)
            if pending and any(d.change == "extra" for d in differences):
                introduced = await _apply_all(conn, watch, pending, settings, built)
                report.unrecorded, differences = _unrecorded(status.pending, introduced, live_ids, differences,
                                                             report.environment)
            report.differences = differences
        finally:
            await watch.close()
            await close_quietly(conn)


async def check_environment(env: Environment, *, prisma: bool = True) -> DriftReport:
    """:func:`check_drift` with an environment's URLs and timeouts (what ``/db drift`` and the CLI call)."""
    return await check_drift(env.migration_url, env.migrations_dir, env_name=env.name,
                             shadow_url=env.shadow_url, connect_timeout=env.connect_timeout,
                             statement_timeout=env.statement_timeout, prisma=prisma)


# --- schema.prisma vs migrations ----------------------------------------------------------------------------


async def prisma_check(url: str, migrations_dir: Path, *, shadow_url: str | None = None, timeout: float = 10.0,
                       prisma_cli: str | None = None) -> PrismaCheck:
    """``prisma migrate diff`` from the migrations to schema.prisma, when a Prisma CLI is on PATH.

    Prisma needs an empty database of its own to replay the migrations in: a fresh shadow
    database, dropped afterwards like the other one.
    """
    cli = prisma_cli or shutil.which("prisma")
    if not cli:
        return PrismaCheck("skipped", "skipped: no Prisma CLI")
    schema = Path(migrations_dir).parent / "schema.prisma"
    if not schema.is_file():
        return PrismaCheck("skipped", f"skipped: no schema.prisma next to the migrations folder ({schema})")
    async with shadow_database(url, shadow_url, timeout=timeout) as (_, shadow, _gone):
        command = [cli, "migrate", "diff", "--from-migrations", str(migrations_dir), "--to-schema-datamodel",
                   str(schema), "--shadow-database-url", shadow, "--script", "--exit-code"]
        env = {**os.environ, "CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1", "NO_COLOR": "1"}
        process = await asyncio.create_subprocess_exec(
            *command, cwd=str(Path(migrations_dir).parent.parent), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), PRISMA_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.communicate()
            return PrismaCheck("error", f"prisma migrate diff did not finish in {PRISMA_TIMEOUT:.0f} s")
    text = redact(out.decode(errors="replace").strip())
    if process.returncode == 0:
        return PrismaCheck("in_sync", "in sync (prisma migrate diff finds nothing)")
    if process.returncode == 2:
        return PrismaCheck("drifted", "schema.prisma says more than the migrations do: create a migration for it "
                                      f"(`prisma migrate dev`); the missing SQL is:\n{text}")
    tail = "\n".join(redact(err.decode(errors="replace")).strip().splitlines()[-8:])
    return PrismaCheck("error", f"prisma migrate diff failed (exit {process.returncode}): {tail or text}")


# --- the way back as a migration ----------------------------------------------------------------------------


def fix_migration_sql(report: DriftReport, *, now: datetime | None = None) -> str:
    """The text of a migration with every generated statement, and the by-hand items as comments."""
    now = now or datetime.now(UTC)
    lines = [f"-- Generated by `migrabot drift {report.environment}` on {now:%Y-%m-%d %H:%M} UTC: brings the",
             "-- database back to what the migrations say. Review it, then run it like any migration; migrabot",
             "-- never applies it on its own. Every statement is idempotent, so this migration also applies",
             "-- cleanly on a database that never drifted (a new environment, the next drift check's shadow).",
             "-- On a large table, consider building an index CONCURRENTLY in a migration of its own.", ""]
    for d in report.differences:
        if d.fix_sql:
            lines += [f"-- {d.message}", d.fix_sql, ""]
    manual = report.by_hand()
    if manual or report.unrecorded:
        lines.append("-- Not generated (write these by hand or settle them otherwise):")
        lines += [f"--   {d.message}: {d.by_hand}" for d in manual]
        lines += [f"--   {u.message}" for u in report.unrecorded]
    return "\n".join(line.replace("\n", "\n-- ") if line.startswith("--") else line for line in lines) + "\n"


def write_fix_migration(report: DriftReport, directory: Path, *, now: datetime | None = None) -> Path | None:
    """Write ``<directory>/<YYYYMMDDHHMMSS>_fix_drift/migration.sql``; its path, or None when nothing is generated.

        >>> write_fix_migration(report, Path("prisma/migrations"))     # doctest: +SKIP
        PosixPath('prisma/migrations/20240115093000_fix_drift/migration.sql')
    """
    if not report.fix_sql():
        return None
    now = now or datetime.now(UTC)
    folder = Path(directory) / f"{now:%Y%m%d%H%M%S}_fix_drift"
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ActionError(f"{folder} already exists: wait a second and try again, or remove it") from None
    except OSError as exc:
        raise ActionError(f"cannot create {folder}: {exc.strerror or exc}; check the path and its permissions") \
            from None
    path = folder / "migration.sql"
    path.write_text(fix_migration_sql(report, now=now), encoding="utf-8")
    return path
