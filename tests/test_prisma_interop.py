"""The real Prisma CLI and migrabot on one database, in either order: they must agree on every row.

Runs Prisma 6.19.3 with its WASM schema engine (no native engine download; see
/work/shared/reference/prisma.md). The npm packages are installed once into
``build/prisma-interop/`` (git-ignored) and reused; every test skips with the reason when
node/npm are missing or the install fails. The files Prisma needs (package.json,
prisma.config.ts, schema.prisma, a timer preload) are in ``tests/prisma_interop/``.

Prisma is run as ``node -r unref_timers.js node_modules/prisma/build/index.js`` rather than
``npx prisma``: the same CLI, but the preload removes the 10 s the WASM engine lingers after
its work, and npx cannot go to the network behind our back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from actions.advisory_lock import migration_lock
from actions.deploy import DeployEvent, deploy
from actions.errors import ActionError
from actions.resolve import resolve_applied, resolve_rolled_back
from actions.status import migration_status
from tests import pgserver
from tests.engine_helpers import make_migrations, rows

ROOT = Path(__file__).resolve().parent.parent
FILES = Path(__file__).resolve().parent / "prisma_interop"
CACHE = ROOT / "build" / "prisma-interop"  # build/ is git-ignored
VERSIONS = {"prisma": "6.19.3", "@prisma/adapter-pg": "7.10.1", "pg": "8."}  # "8." = any 8.x
PACKAGES = ["prisma@6.19.3", "@prisma/adapter-pg@7.10.1", "pg@8"]
INSTALL_TIMEOUT = 300.0
PRISMA_TIMEOUT = 60.0
ADVISORY_LOCK_KEY = 72707369  # Prisma's migration lock key, written out: migrabot's must be the same
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
UP_TO_DATE = "Database schema is up to date!"
NOTHING_TO_APPLY = "No pending migrations to apply."


# ---------------------------------------------------------------------------------------------- install

def _installed_version(cache: Path, package: str) -> str | None:
    try:
        data = json.loads((cache / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("version"))


def _is_installed(cache: Path) -> bool:
    return (all((_installed_version(cache, p) or "").startswith(v) for p, v in VERSIONS.items())
            and (cache / "node_modules" / "prisma" / "build" / "index.js").is_file())


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def install_prisma(cache: Path = CACHE) -> str | None:
    """Install the Prisma CLI into ``cache`` unless it is there already; returns why not, or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return ("Prisma interop tests need Node.js and npm on PATH (node: "
                f"{node or 'missing'}, npm: {npm or 'missing'}); install them to run these tests")
    if _is_installed(cache):
        return None
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(FILES / "package.json", cache / "package.json")
    command = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact", *PACKAGES]
    try:
        done = subprocess.run(command, cwd=cache, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return (f"`npm install {' '.join(PACKAGES)}` did not finish in {INSTALL_TIMEOUT:.0f} s (no access to the "
                f"npm registry?): {_tail(out)}")
    if done.returncode != 0 or not _is_installed(cache):
        return (f"`npm install {' '.join(PACKAGES)}` in {cache} failed (exit {done.returncode}); npm said:\n"
                f"{_tail(done.stderr + done.stdout)}")
    return None


@pytest.fixture(scope="session")
def prisma_cli() -> Path:
    """The folder holding node_modules with the Prisma CLI; installs it on first use or skips."""
    reason = install_prisma(CACHE)
    if reason:
        pytest.skip(reason)
    return CACHE


# ---------------------------------------------------------------------------------------------- prisma runs

@dataclass
class PrismaRun:
    code: int
    output: str  # stdout and stderr together, colours removed


@dataclass
class PrismaProject:
    """A Prisma project in tmp_path: ``prisma/migrations`` is the folder both tools use."""

    root: Path
    url: str
    cli: Path

    @property
    def migrations(self) -> Path:
        return self.root / "prisma" / "migrations"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.url,
            "PRISMA_CLIENT_ENGINE_TYPE": "client",  # else it downloads a query engine
            "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/true",  # resolve --rolled-back looks for a native one
            "CHECKPOINT_DISABLE": "1",  # no telemetry call
            "PRISMA_HIDE_UPDATE_MESSAGE": "1",
            "NO_COLOR": "1",
        })
        return env

    def command(self, *args: str) -> list[str]:
        node = shutil.which("node") or "node"
        return [node, "-r", str(FILES / "unref_timers.js"), str(self.cli / "node_modules" / "prisma" / "build" /
                                                                    "index.js"), *args]

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.command(*args), cwd=self.root, env=self.env(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)

    async def finish(self, process: asyncio.subprocess.Process, timeout: float = PRISMA_TIMEOUT) -> PrismaRun:
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            out, _ = await process.communicate()
            pytest.fail(f"prisma did not finish in {timeout} s; it printed:\n{out.decode(errors='replace')}")
        return PrismaRun(process.returncode or 0, ANSI.sub("", out.decode(errors="replace")))

    async def run(self, *args: str, timeout: float = PRISMA_TIMEOUT) -> PrismaRun:
        return await self.finish(await self.start(*args), timeout)

    async def deploy(self) -> PrismaRun:
        return await self.run("migrate", "deploy")

    async def status(self) -> PrismaRun:
        return await self.run("migrate", "status")


def _make_project(root: Path, url: str, cli: Path) -> PrismaProject:
    (root / "prisma" / "migrations").mkdir(parents=True)
    shutil.copy(FILES / "prisma.config.ts", root / "prisma.config.ts")
    shutil.copy(FILES / "schema.prisma", root / "prisma" / "schema.prisma")
    (root / "prisma" / "migrations" / "migration_lock.toml").write_text('# Prisma\nprovider = "postgresql"\n')
    # prisma.config.ts imports "prisma/config" and "@prisma/adapter-pg": resolved through this link
    (root / "node_modules").symlink_to(cli / "node_modules", target_is_directory=True)
    return PrismaProject(root, url, cli)


@pytest.fixture
def project(tmp_path: Path, database_url: str, prisma_cli: Path) -> PrismaProject:
    """A Prisma project on the fresh test database."""
    return _make_project(tmp_path / "project", database_url, prisma_cli)


@pytest.fixture
def timer() -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\ntook {time.monotonic() - started:.1f} s")


def copy_umami(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        shutil.copytree(source / name, target / name)


def umami_names(umami: Path) -> list[str]:
    return sorted(p.name for p in umami.iterdir() if p.is_dir())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_applied_like_prisma(row: dict, folder: Path) -> None:
    """What `prisma migrate deploy` writes for a migration that succeeded."""
    assert UUID4.match(row["id"]), row
    assert row["checksum"] == sha256(folder / row["migration_name"] / "migration.sql")
    assert row["finished_at"] is not None and row["finished_at"] >= row["started_at"]
    assert row["rolled_back_at"] is None and row["logs"] is None and row["applied_steps_count"] == 1


# ---------------------------------------------------------------------------------------------- 1 and 2: deploys

async def test_prisma_applies_the_first_half_and_migrabot_the_rest(
        project: PrismaProject, umami_deployable: Path, timer: None) -> None:
    names = umami_names(umami_deployable)
    first, rest = names[:10], names[10:]
    copy_umami(umami_deployable, project.migrations, first)
    run = await project.deploy()
    assert run.code == 0, run.output
    assert "All migrations have been successfully applied." in run.output

    copy_umami(umami_deployable, project.migrations, rest)
    status = await migration_status(project.url, project.migrations)
    assert status.applied == first and status.pending == rest
    assert status.failed == [] and status.modified == [] and status.missing == []
    assert status.applied_checksums == {n: sha256(project.migrations / n / "migration.sql") for n in first}
    assert status.last_applied == first[-1]

    result = await deploy(project.url, project.migrations)
    assert result.ok and [m.name for m in result.applied] == rest

    run = await project.status()
    assert run.code == 0 and UP_TO_DATE in run.output, run.output
    assert f"{len(names)} migrations found" in run.output
    run = await project.deploy()
    assert run.code == 0 and NOTHING_TO_APPLY in run.output, run.output
    recorded = await rows(project.url)
    assert [r["migration_name"] for r in recorded] == names  # nothing applied twice
    for row in recorded:
        assert_applied_like_prisma(row, project.migrations)


async def _table_shape(url: str) -> list[tuple]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position")
        key = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '_prisma_migrations'::regclass AND i.indisprimary")
    finally:
        await conn.close()
    return [tuple(r) for r in columns] + [("primary key", *[r[0] for r in key])]


async def test_migrabot_applies_everything_and_prisma_agrees_row_for_row(
        project: PrismaProject, umami_deployable: Path, pg_server: pgserver.Server, prod_database: str,
        tmp_path: Path, timer: None) -> None:
    names = umami_names(umami_deployable)
    copy_umami(umami_deployable, project.migrations, names)
    # migrabot through its CLI, as an operator would run it
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.test]\ndatabase_url = "{project.url}"\n'
                      f'migrations_dir = "{project.migrations}"\n')
    env = {k: v for k, v in os.environ.items() if k != "MIGRABOT_CONFIG"}
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "deploy", "test", "--json", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(cli.communicate(), 120)
    assert cli.returncode == 0, err.decode()
    assert [m["name"] for m in json.loads(out)["applied"]] == names

    run = await project.status()
    assert run.code == 0 and UP_TO_DATE in run.output, run.output
    run = await project.deploy()
    assert run.code == 0 and NOTHING_TO_APPLY in run.output, run.output

    # the same folder deployed by Prisma into a twin database: same table, same rows
    twin = _make_project(tmp_path / "twin", pg_server.url_for(prod_database), project.cli)
    copy_umami(umami_deployable, twin.migrations, names)
    run = await twin.deploy()
    assert run.code == 0, run.output
    assert await _table_shape(project.url) == await _table_shape(twin.url)
    ours, theirs = await rows(project.url), await rows(twin.url)
    assert [r["migration_name"] for r in ours] == [r["migration_name"] for r in theirs] == names
    for mine, prismas in zip(ours, theirs, strict=True):
        assert_applied_like_prisma(mine, project.migrations)
        assert_applied_like_prisma(prismas, twin.migrations)
        assert mine["checksum"] == prismas["checksum"]
        assert mine["id"] != prismas["id"]
    # and migrabot reads Prisma's rows as fully applied
    status = await migration_status(twin.url, twin.migrations)
    assert status.up_to_date and status.applied == names


# ---------------------------------------------------------------------------------------------- 3: failures

async def test_failed_under_migrabot_is_failed_for_prisma_until_prisma_resolves_it(
        project: PrismaProject, timer: None) -> None:
    make_migrations(project.migrations, {"01_users": "CREATE TABLE users (id int PRIMARY KEY);",
                                         "02_bad": "ALTER TABLE users ADD COLUMN age int;\nSELECT 1/0;"})
    result = await deploy(project.url, project.migrations)
    assert [m.name for m in result.applied] == ["01_users"] and result.failed and result.failed.name == "02_bad"

    run = await project.status()
    assert run.code == 1 and "Following migration have failed:" in run.output and "02_bad" in run.output, run.output
    run = await project.deploy()
    assert run.code != 0 and "P3009" in run.output and "02_bad" in run.output, run.output

    run = await project.run("migrate", "resolve", "--rolled-back", "02_bad")
    assert run.code == 0, run.output
    status = await migration_status(project.url, project.migrations)
    assert status.pending == ["02_bad"] and status.rolled_back == ["02_bad"] and status.failed == []

    (project.migrations / "02_bad" / "migration.sql").write_text("ALTER TABLE users ADD COLUMN age int;\n")
    result = await deploy(project.url, project.migrations)
    assert result.ok and [m.name for m in result.applied] == ["02_bad"]
    run = await project.status()
    assert run.code == 0 and UP_TO_DATE in run.output, run.output
    run = await project.deploy()
    assert run.code == 0 and NOTHING_TO_APPLY in run.output, run.output
    bad = [r for r in await rows(project.url) if r["migration_name"] == "02_bad"]
    assert len(bad) == 2
    assert bad[0]["rolled_back_at"] is not None and bad[0]["finished_at"] is None
    assert "division by zero" in bad[0]["logs"]
    assert_applied_like_prisma(bad[1], project.migrations)


async def test_failed_under_prisma_is_refused_by_migrabot_until_migrabot_resolves_it(
        project: PrismaProject, pg_server: pgserver.Server, prod_database: str, tmp_path: Path,
        timer: None) -> None:
    migrations = {"01_users": "CREATE TABLE users (id int PRIMARY KEY);", "02_bad": "SELECT 1/0;"}
    make_migrations(project.migrations, migrations)
    run = await project.deploy()
    assert run.code != 0 and "division by zero" in run.output, run.output

    status = await migration_status(project.url, project.migrations)
    assert status.applied == ["01_users"] and [f.name for f in status.failed] == ["02_bad"]
    assert "division by zero" in (status.failed[0].logs or "") and not status.up_to_date
    with pytest.raises(ActionError) as refused:
        await deploy(project.url, project.migrations)
    assert refused.value.code == "P3009" and "02_bad" in str(refused.value)

    # the operator fixed the database by hand: migrabot records it as applied, Prisma moves on
    message = await resolve_applied(project.url, project.migrations, "02_bad")
    assert "02_bad" in message
    make_migrations(project.migrations, {"03_posts": "CREATE TABLE posts (id int);"})
    run = await project.deploy()
    assert run.code == 0 and "03_posts" in run.output, run.output
    run = await project.status()
    assert run.code == 0 and UP_TO_DATE in run.output, run.output
    assert (await migration_status(project.url, project.migrations)).up_to_date

    # the rows of migrabot's resolve --applied are those of Prisma's own, on a twin database
    twin = _make_project(tmp_path / "twin", pg_server.url_for(prod_database), project.cli)
    make_migrations(twin.migrations, migrations)
    assert (await twin.deploy()).code != 0
    run = await twin.run("migrate", "resolve", "--applied", "02_bad")
    assert run.code == 0, run.output

    def shape(row: dict) -> tuple:
        return (row["checksum"], row["finished_at"] is None, row["rolled_back_at"] is None, row["logs"] == "",
                row["logs"] is None, row["applied_steps_count"], row["started_at"] == row["finished_at"])

    ours = [shape(r) for r in await rows(project.url) if r["migration_name"] == "02_bad"]
    theirs = [shape(r) for r in await rows(twin.url) if r["migration_name"] == "02_bad"]
    assert ours == theirs and len(ours) == 2


async def test_resolved_rolled_back_by_migrabot_is_run_again_by_prisma(project: PrismaProject, timer: None) -> None:
    make_migrations(project.migrations, {"01_users": "CREATE TABLE users (id int PRIMARY KEY);",
                                         "02_bad": "CREATE TABLE tags (id int);\nSELECT 1/0;"})
    result = await deploy(project.url, project.migrations)
    assert result.failed and result.failed.name == "02_bad"
    await resolve_rolled_back(project.url, project.migrations, "02_bad")
    (project.migrations / "02_bad" / "migration.sql").write_text("CREATE TABLE tags (id int);\n")

    run = await project.deploy()  # migrabot's deploy was atomic: tags does not exist, so this succeeds
    assert run.code == 0 and "02_bad" in run.output, run.output
    status = await migration_status(project.url, project.migrations)
    assert status.up_to_date and status.applied == ["01_users", "02_bad"] and status.rolled_back == []


# ---------------------------------------------------------------------------------------------- 4: the advisory lock

async def _lock_waiters(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND ((classid::bigint << 32) | objid::bigint) = $1", ADVISORY_LOCK_KEY))


async def _wait_until(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_prisma_waits_for_migrabots_advisory_lock(project: PrismaProject, timer: None) -> None:
    make_migrations(project.migrations, {"01_users": "CREATE TABLE users (id int PRIMARY KEY);"})
    holder = await asyncpg.connect(project.url, timeout=10)
    try:
        async with migration_lock(holder, timeout=5):  # the lock migrabot's deploy and resolve take
            process = await project.start("migrate", "deploy")
            assert await _wait_until(lambda: _lock_waiters(holder)), "prisma never asked for the advisory lock"
            assert process.returncode is None
            assert await holder.fetchval("SELECT to_regclass('users')") is None
        run = await project.finish(process)
    finally:
        await holder.close()
    assert run.code == 0 and "01_users" in run.output, run.output
    assert (await migration_status(project.url, project.migrations)).up_to_date


async def test_migrabot_waits_while_prisma_deploys(project: PrismaProject, timer: None) -> None:
    make_migrations(project.migrations, {"01_users": "CREATE TABLE users (id int PRIMARY KEY);",
                                         "02_slow": "SELECT pg_sleep(2);"})
    process = await project.start("migrate", "deploy")
    watcher = await asyncpg.connect(project.url, timeout=10)
    try:
        async def prisma_is_sleeping() -> bool:
            return bool(await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)%' AND state = 'active'"))

        assert await _wait_until(prisma_is_sleeping, 20), "prisma never started 02_slow"
        events: list[DeployEvent] = []
        result = await deploy(project.url, project.migrations, advisory_lock_timeout=20, on_event=events.append)
    finally:
        await watcher.close()
    run = await project.finish(process)
    assert run.code == 0, run.output
    waits = [e for e in events if e.kind == "waiting_for_lock"]
    assert len(waits) == 1 and waits[0].blockers, events  # names the Prisma session holding the lock
    assert result.ok and result.applied == [] and result.pending == []  # nothing applied twice
    assert len(await rows(project.url)) == 2


async def test_prisma_gives_up_with_p1002_while_the_lock_stays_held(project: PrismaProject, timer: None) -> None:
    """Prisma's own bound on the wait (about 10 s): it fails cleanly and applies nothing."""
    make_migrations(project.migrations, {"01_users": "CREATE TABLE users (id int PRIMARY KEY);"})
    holder = await asyncpg.connect(project.url, timeout=10)
    try:
        async with migration_lock(holder, timeout=5):
            run = await project.run("migrate", "deploy", timeout=30)
            assert await holder.fetchval("SELECT to_regclass('users')") is None
    finally:
        await holder.close()
    assert run.code != 0 and "P1002" in run.output, run.output
    status = await migration_status(project.url, project.migrations)
    assert status.pending == ["01_users"] and status.failed == []


async def test_a_file_with_a_byte_order_mark_is_recorded_as_prisma_records_it(
        project: PrismaProject, pg_server: pgserver.Server, prod_database: str, tmp_path: Path, timer: None) -> None:
    """Prisma applies a migration.sql saved with a UTF-8 BOM and checksums its bytes, BOM included: so does migrabot."""
    raw = b"\xef\xbb\xbfCREATE TABLE bom_t (x int);\n"
    make_migrations(project.migrations, {"01_bom": raw}, provider=None)
    result = await deploy(project.url, project.migrations)
    assert result.ok, result.failed
    run = await project.status()
    assert run.code == 0 and UP_TO_DATE in run.output, run.output
    twin = _make_project(tmp_path / "twin", pg_server.url_for(prod_database), project.cli)
    make_migrations(twin.migrations, {"01_bom": raw}, provider=None)
    run = await twin.deploy()
    assert run.code == 0, run.output
    [ours], [theirs] = await rows(project.url), await rows(twin.url)
    assert ours["checksum"] == theirs["checksum"] == hashlib.sha256(raw).hexdigest()
    assert (await migration_status(twin.url, twin.migrations)).up_to_date
