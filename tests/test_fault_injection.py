"""Faults injected at every step of deploy, backup, restore and `migrabot serve`: the invariants hold.

Real processes on a real PostgreSQL. The faults:

* ``kill -9`` of the CLI (``python -m bot deploy|restore …``) at each step: for steps that last
  milliseconds, through the hook ``MIGRABOT_FAULT_POINT=<point>`` (``actions/faults.py``), else when
  the step is seen on the server (a ``pg_sleep`` in a migration, pg_dump waiting behind a lock);
* a server-side fault: ``pg_terminate_backend`` from another connection, of the migrating backend,
  of pg_dump's or pg_restore's, or of every session of the CLI process at a restore step
  (``<point>:pause`` freezes the CLI there while the test terminates its sessions; a PostgreSQL
  restart as the CLI sees it, without restarting a cluster other people share);
* ``kill -9`` of ``migrabot serve --http`` while it applies a migration.

At every point: no migration applied twice (``_prisma_migrations`` and the data), the original
database intact and reachable under its name (after the documented ``--clean-up`` where a killed
restore blocked it), no stray ``__restore_…`` database (or it is named and removed by
``migrabot restore ENV --clean-up``), and every message true: what the CLI printed, what
``migrabot status`` says afterwards, what the run message says after serve restarts.

Already covered elsewhere, not repeated here: a terminated backend during a transactional and a
non-transactional migration and during status (tests/test_engine_faults.py); SIGTERM, kill -9 and
lock waits of ``migrabot backup`` (tests/test_backup_faults.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from actions.backup import take_backup
from actions.db import database_name
from bot.cli import main
from bot.runs.recovery import recover
from tests import pgserver, test_migrate_restart
from tests.botstack import ALICE, CHANNEL, bot_stack, wait_for
from tests.conftest import ROOT
from tests.engine_helpers import make_migrations
from tests.test_migrate_restart import Served, served_bot

pytestmark = pytest.mark.slow

SLEEP = 3  # seconds a migration statement runs: long enough to be hit, short enough for the suite

MIGRATIONS = {
    "01_init": "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);",
    "02_tx": f"CREATE TABLE tx_t (x int);\nINSERT INTO tx_t VALUES (1);\nSELECT pg_sleep({SLEEP});\n"
             "INSERT INTO tx_t VALUES (2);",
    "03_ntx": f"CREATE TABLE ntx_t (x int);\nCREATE INDEX CONCURRENTLY ntx_x ON ntx_t (x);\nSELECT pg_sleep({SLEEP});\n"
              "INSERT INTO ntx_t VALUES (1);",
}


# --- processes and sessions -----------------------------------------------------------------------------


@dataclass
class Cli:
    """A migrabot CLI process under test, with its output once it ended."""

    proc: subprocess.Popen[str]
    out: str = ""
    err: str = ""

    def finish(self, timeout: float = 120) -> Cli:
        self.out, self.err = self.proc.communicate(timeout=timeout)
        return self

    @property
    def killed(self) -> bool:
        return self.proc.returncode == -signal.SIGKILL


def start_cli(config: Path, *argv: str, fault: str | None = None, pause_dir: Path | None = None) -> Cli:
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL")}
    if fault:
        env["MIGRABOT_FAULT_POINT"] = fault
    if pause_dir:
        env["MIGRABOT_FAULT_DIR"] = str(pause_dir)
    proc = subprocess.Popen([sys.executable, "-m", "bot", *argv, "--config", str(config)], cwd=ROOT, env=env,
                            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Cli(proc)


@pytest.fixture
def clis() -> Iterator[list[Cli]]:
    """Every CLI a test starts is killed and reaped at the end, whatever happened."""
    started: list[Cli] = []
    yield started
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
        cli.proc.communicate()


def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (pg_dump, pg_restore)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        tree += children
        todo += children
    return tree


def _client_ports(pids: list[int]) -> list[int]:
    """The local TCP ports of the sockets these processes hold (a session's ``client_port``)."""
    ports: set[int] = set()
    for pid in pids:
        try:
            inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
                      if os.readlink(fd).startswith("socket:[")}
            tables = [Path(f"/proc/{pid}/net/{t}").read_text() for t in ("tcp", "tcp6")]
        except OSError:
            continue
        for table in tables:
            for line in table.splitlines()[1:]:
                parts = line.split()
                if parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


async def terminate_sessions_of(admin_url: str, pid: int) -> int:
    """pg_terminate_backend for every session of process ``pid`` and its children; how many."""
    ports = _client_ports(_process_tree(pid))
    conn = await asyncpg.connect(admin_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_port = ANY($1::int[]) "
            "AND client_addr IS NOT NULL AND pid <> pg_backend_pid()", ports))
    finally:
        await conn.close()


async def wait_for_session(admin_url: str, where: str, *args: object, cli: Cli | None = None,
                           process: asyncio.subprocess.Process | None = None, timeout: float = 60) -> int:
    """The pid of a session matching ``where`` (on pg_stat_activity); fails early if the CLI (or process) ends."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(admin_url)
    try:
        while time.monotonic() < deadline:
            pid = await conn.fetchval(f"SELECT pid FROM pg_stat_activity WHERE {where} AND pid <> pg_backend_pid() "
                                      "LIMIT 1", *args)
            if pid:
                return int(pid)
            assert cli is None or cli.proc.poll() is None, f"the CLI ended early: {cli.finish()}"
            assert process is None or process.returncode is None, "the process ended early"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError(f"no session with {where} within {timeout}s")


async def wait_for_pause(pause_dir: Path, point: str, cli: Cli, timeout: float = 60) -> Path:
    marker = pause_dir / point
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert cli.proc.poll() is None, f"the CLI ended before {point}: {cli.finish()}"
        assert time.monotonic() < deadline, f"the CLI never reached {point}"
        await asyncio.sleep(0.02)
    return marker


async def wait_until_gone(admin_url: str, pid: int, timeout: float = 30) -> None:
    """Until backend ``pid`` (a killed client's statement still running on the server) has ended."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(admin_url)
    try:
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            assert time.monotonic() < deadline, f"backend {pid} is still there after {timeout}s"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


# --- what the database holds ----------------------------------------------------------------------------


async def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def finished_rows(url: str) -> dict[str, int]:
    """How many times each migration is recorded as applied."""
    if not (await query(url, "SELECT to_regclass('_prisma_migrations') IS NOT NULL AS t"))[0]["t"]:
        return {}
    return {r["migration_name"]: r["n"] for r in await query(
        url, "SELECT migration_name, count(*) AS n FROM _prisma_migrations WHERE finished_at IS NOT NULL "
             "AND rolled_back_at IS NULL GROUP BY 1")}


async def table_rows(url: str, table: str) -> int | None:
    if not (await query(url, f"SELECT to_regclass('{table}') IS NOT NULL AS t"))[0]["t"]:
        return None
    return int((await query(url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def assert_applied_at_most_once(url: str) -> dict[str, int]:
    """No migration recorded twice, and its data not there twice."""
    counts = await finished_rows(url)
    assert all(n == 1 for n in counts.values()), counts
    assert await table_rows(url, "tx_t") in (None, 0, 2)  # 02_tx's two rows, once, or nothing
    assert await table_rows(url, "ntx_t") in (None, 0, 1)
    return counts


async def databases_like(admin_url: str, db: str) -> list[str]:
    return sorted(r["datname"] for r in await query(
        admin_url, "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", db))


def write_config(tmp_path: Path, url: str, folder: Path) -> Path:
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.test]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n'
                      f'backup_dir = "{tmp_path / "backups"}"\n')
    return config


# --- deploy ---------------------------------------------------------------------------------------------


@pytest.fixture
def deploy_setup(tmp_path: Path, database_url: str) -> tuple[Path, Path]:
    folder = make_migrations(tmp_path / "migrations", MIGRATIONS)
    return write_config(tmp_path, database_url, folder), tmp_path / "pause"


def status_text(capsys: pytest.CaptureFixture[str], config: Path) -> str:
    _, out, err = in_process(capsys, "status", "test", "--config", str(config))
    assert "Traceback" not in err and "internal error" not in err, err
    return out + err


@pytest.mark.parametrize("point", ["deploy.preflight", "deploy.backup", "deploy.status", "deploy.verify"])
def test_deploy_killed_at_a_step(deploy_setup: tuple[Path, Path], database_url: str, clis: list[Cli],
                                 capsys: pytest.CaptureFixture[str], point: str) -> None:
    config, _ = deploy_setup
    cli = start_cli(config, "deploy", "test", fault=point)
    clis.append(cli)
    assert cli.finish().killed, (cli.out, cli.err)
    assert "FAIL" not in cli.out + cli.err and "Traceback" not in cli.err, (cli.out, cli.err)
    counts = asyncio.run(assert_applied_at_most_once(database_url))
    text = status_text(capsys, config)
    assert "FAILED" not in text and "running" not in text, text
    if point == "deploy.verify":  # killed after every migration committed: all applied, once
        assert counts == {"01_init": 1, "02_tx": 1, "03_ntx": 1} and "test: up to date" in text
    else:  # killed before anything was applied: everything still pending, nothing half-done
        assert counts == {} and "pending (3)" in text, (counts, text)
        again = start_cli(config, "deploy", "test")
        clis.append(again)
        assert again.finish().proc.returncode == 0, (again.out, again.err)
        assert asyncio.run(assert_applied_at_most_once(database_url)) == {"01_init": 1, "02_tx": 1, "03_ntx": 1}
    if point == "deploy.backup":  # killed before pg_dump started: no backup folder claims to be one
        _, out, _ = in_process(capsys, "backups", "test", "--json", "--config", str(config))
        assert all(b["verified"] for b in json.loads(out)["backups"])


async def _locked_users(url: str) -> asyncpg.Connection:
    """A session holding ACCESS EXCLUSIVE on users: pg_dump waits for it (the backup is in progress)."""
    locker = await asyncpg.connect(url)
    await locker.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    return locker


@pytest.mark.parametrize("fault", ["kill -9", "pg_terminate_backend"])
def test_deploy_fault_during_pg_dump(deploy_setup: tuple[Path, Path], database_url: str, database: str,
                                     pg_server: pgserver.Server, clis: list[Cli],
                                     capsys: pytest.CaptureFixture[str], fault: str) -> None:
    config, _ = deploy_setup
    folder = config.parent / "migrations"
    first = make_migrations(config.parent / "first", {"01_init": MIGRATIONS["01_init"]})
    config.write_text(config.read_text().replace(str(folder), str(first)))
    assert in_process(capsys, "deploy", "test", "--config", str(config))[0] == 0
    config.write_text(config.read_text().replace(str(first), str(folder)))
    _, out, _ = in_process(capsys, "backups", "test", "--json", "--config", str(config))
    before = {b["id"] for b in json.loads(out)["backups"]}

    async def scenario() -> None:
        locker = await _locked_users(database_url)
        try:
            cli = start_cli(config, "deploy", "test")
            clis.append(cli)
            dump = await wait_for_session(pg_server.admin_url, "datname = $1 AND application_name = 'pg_dump'",
                                          database, cli=cli)
            if fault == "kill -9":
                cli.proc.kill()
            await query(pg_server.admin_url, "SELECT pg_terminate_backend($1)", dump)
            await asyncio.to_thread(cli.finish)
            if fault == "kill -9":
                assert cli.killed
            else:
                assert cli.proc.returncode == 2 and "Traceback" not in cli.err and "internal error" not in cli.err
                assert "backup failed, so nothing was changed" in cli.err
                assert "terminating connection" in cli.err or "connection" in cli.err
        finally:
            await locker.close()

    asyncio.run(scenario())
    assert asyncio.run(assert_applied_at_most_once(database_url)) == {"01_init": 1}
    text = status_text(capsys, config)
    assert "pending (2)" in text and "FAILED" not in text
    _, out, _ = in_process(capsys, "backups", "test", "--json", "--config", str(config))
    for backup in [b for b in json.loads(out)["backups"] if b["id"] not in before]:
        # the stopped one, if its folder remains, does not pass for a good backup
        assert backup["verified"] is False and backup["status"] in ("interrupted", "failed")


def test_deploy_killed_while_applying_a_transactional_file(
        deploy_setup: tuple[Path, Path], database_url: str, database: str, pg_server: pgserver.Server,
        clis: list[Cli], capsys: pytest.CaptureFixture[str]) -> None:
    """The server finishes the statement it was given (file, row and COMMIT in one query): 02_tx commits."""
    config, _ = deploy_setup
    cli = start_cli(config, "deploy", "test")
    clis.append(cli)
    pid = asyncio.run(wait_for_session(pg_server.admin_url, "datname = $1 AND wait_event = 'PgSleep'",
                                       database, cli=cli))
    cli.proc.kill()
    cli.finish()
    text = status_text(capsys, config)
    assert f"02_tx: still running in pid {pid}" in text and "FAILED" not in text and "resolve" not in text
    asyncio.run(wait_until_gone(pg_server.admin_url, pid))
    counts = asyncio.run(assert_applied_at_most_once(database_url))
    assert counts == {"01_init": 1, "02_tx": 1}
    text = status_text(capsys, config)
    assert "pending (1)" in text and "03_ntx" in text and "FAILED" not in text
    assert in_process(capsys, "deploy", "test", "--config", str(config))[0] == 0
    assert asyncio.run(assert_applied_at_most_once(database_url)) == {"01_init": 1, "02_tx": 1, "03_ntx": 1}
    assert asyncio.run(table_rows(database_url, "tx_t")) == 2


def test_deploy_killed_half_way_through_a_non_transactional_file(
        deploy_setup: tuple[Path, Path], database_url: str, database: str, pg_server: pgserver.Server,
        clis: list[Cli], capsys: pytest.CaptureFixture[str]) -> None:
    """Statements 1-2 committed, 3 was running: status says so, and the next deploy does not run them again."""
    config, _ = deploy_setup
    cli = start_cli(config, "deploy", "test")
    clis.append(cli)
    pid = asyncio.run(wait_for_session(  # 03_ntx's third statement, sent alone (not 02_tx's sleep)
        pg_server.admin_url, "datname = $1 AND wait_event = 'PgSleep' AND query LIKE 'SELECT pg_sleep%'",
        database, cli=cli))
    cli.proc.kill()
    cli.finish()
    text = status_text(capsys, config)
    assert f"03_ntx: still running in pid {pid}" in text and "FAILED" not in text
    asyncio.run(wait_until_gone(pg_server.admin_url, pid))
    text = status_text(capsys, config)
    assert "FAILED: 03_ntx" in text and "no outcome was recorded" in text
    assert "statements 1-2 of 4 are committed" in text and "statement 3 was interrupted" in text
    assert "--applied 03_ntx" in text and "deploy reruns it" not in text
    code, _, err = in_process(capsys, "deploy", "test", "--config", str(config))
    assert code == 2 and "P3009" in err and "statements 1-2 of 4 are committed" in err
    assert asyncio.run(table_rows(database_url, "ntx_t")) == 0  # statement 4 never ran, and was not run now
    # what the message says to do: complete the rest by hand, then resolve --applied
    asyncio.run(query(database_url, "INSERT INTO ntx_t VALUES (1)"))
    assert in_process(capsys, "resolve", "test", "--applied", "03_ntx", "--config", str(config))[0] == 0
    assert "test: up to date" in status_text(capsys, config)
    assert asyncio.run(assert_applied_at_most_once(database_url)) == {"01_init": 1, "02_tx": 1, "03_ntx": 1}


# --- restore ------------------------------------------------------------------------------------------


@dataclass
class Restorable:
    config: Path
    url: str
    db: str
    admin_url: str
    backup_id: str
    pause_dir: Path
    fingerprint: tuple[int, int]  # the original's (rows, sum of ids), after the backup was taken


async def fingerprint(url: str) -> tuple[int, int]:
    [row] = await query(url, "SELECT count(*) AS n, coalesce(sum(id), 0) AS s FROM users")
    return int(row["n"]), int(row["s"])


def make_restorable(tmp_path: Path, pg_server: pgserver.Server, database: str, capsys: pytest.CaptureFixture[str],
                    rows: int = 100) -> Restorable:
    url = pg_server.url_for(database)
    folder = make_migrations(tmp_path / "migrations", {"01_init": MIGRATIONS["01_init"]})
    config = write_config(tmp_path, url, folder)
    assert in_process(capsys, "deploy", "test", "--config", str(config))[0] == 0
    asyncio.run(query(url, "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, $1::int) g", rows))
    code, out, err = in_process(capsys, "backup", "test", "--json", "--config", str(config))
    assert code == 0, err
    backup_id = json.loads(out)["id"]
    asyncio.run(query(url, "INSERT INTO users VALUES (0, 'written after the backup')"))
    return Restorable(config, url, database, pg_server.admin_url, backup_id, tmp_path / "pause",
                      asyncio.run(fingerprint(url)))


def start_restore(r: Restorable, fault: str | None = None) -> Cli:
    r.pause_dir.mkdir(exist_ok=True)
    return start_cli(r.config, "restore", "test", r.backup_id, "--confirm", "RESTORE", fault=fault,
                     pause_dir=r.pause_dir)


def strays(r: Restorable) -> list[str]:
    """Databases a restore made that are not kept on purpose (``__before_restore_`` ones are)."""
    return [d for d in asyncio.run(databases_like(r.admin_url, r.db)) if "__restore_" in d]


def assert_original_intact(r: Restorable) -> None:
    assert asyncio.run(fingerprint(r.url)) == r.fingerprint
    assert asyncio.run(finished_rows(r.url)) == {"01_init": 1}


def health_checks(r: Restorable, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, str]]:
    _, out, err = in_process(capsys, "health", "test", "--json", "--config", str(r.config))
    assert "Traceback" not in err, err
    return {c["name"]: c for c in json.loads(out)["checks"]}


def clean_up(r: Restorable, capsys: pytest.CaptureFixture[str]) -> str:
    """The documented command for what a killed restore left; returns what it printed."""
    code, out, err = in_process(capsys, "restore", "test", "--clean-up", "--config", str(r.config))
    assert code == 0, err
    return out


RESTORE_POINTS = ["restore.snapshot", "restore.pg_restore", "restore.verify", "restore.swap", "restore.undo"]


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_restore_killed_at_a_step(tmp_path: Path, pg_server: pgserver.Server, database: str, clis: list[Cli],
                                  capsys: pytest.CaptureFixture[str], point: str) -> None:
    r = make_restorable(tmp_path, pg_server, database, capsys)
    # the undo runs only after a failed swap: the swap loses its sessions first, then the kill comes
    fault = "restore.swap:pause,restore.undo" if point == "restore.undo" else point
    cli = start_restore(r, fault)
    clis.append(cli)
    if point == "restore.undo":
        marker = asyncio.run(wait_for_pause(r.pause_dir, "restore.swap", cli))
        assert asyncio.run(terminate_sessions_of(r.admin_url, cli.proc.pid)) >= 1
        marker.unlink()
    assert cli.finish().killed
    assert "restored backup" not in cli.out + cli.err
    left = strays(r)
    blocked = point in ("restore.swap", "restore.undo")  # killed with connections to the original blocked
    code, out, err = in_process(capsys, "status", "test", "--config", str(r.config))
    if blocked:
        assert code == 2 and "does not accept connections" in err and "migrabot restore ENV --clean-up" in err, err
    else:
        assert code == 0 and "test: up to date" in out, out + err
        assert_original_intact(r)
    # killed before the copy existed: nothing left; after: the one copy, for --clean-up to find
    assert len(left) == (0 if point == "restore.snapshot" else 1), left
    checks = health_checks(r, capsys)  # health names what is left, and the command that removes it
    if left or blocked:
        assert all(copy in checks["restore"]["reason"] for copy in left) and "--clean-up" in checks["restore"]["reason"]
    else:
        assert "restore" not in checks
    if blocked:
        assert checks["database"]["status"] == "fail" and "--clean-up" in checks["database"]["reason"]
    done = clean_up(r, capsys)
    for copy in left:
        assert f"dropped {copy}" in done
    if blocked:
        assert "accepts connections again" in done
    assert strays(r) == [] and "restore" not in health_checks(r, capsys)
    assert_original_intact(r)
    # and a restore now runs to the end
    again = start_restore(r)
    clis.append(again)
    assert again.finish().proc.returncode == 0, again.err
    assert strays(r) == [] and asyncio.run(fingerprint(r.url)) == (100, 5050)


def test_the_next_restore_drops_what_a_killed_one_left(tmp_path: Path, pg_server: pgserver.Server, database: str,
                                                       clis: list[Cli], capsys: pytest.CaptureFixture[str]) -> None:
    r = make_restorable(tmp_path, pg_server, database, capsys)
    killed = start_restore(r, "restore.verify")
    clis.append(killed)
    assert killed.finish().killed
    [copy] = strays(r)
    again = start_restore(r)
    clis.append(again)
    assert again.finish().proc.returncode == 0, again.err
    assert f"dropped {copy}, a copy an interrupted restore was filling" in again.err
    assert strays(r) == [] and asyncio.run(fingerprint(r.url)) == (100, 5050)


def test_a_restore_refuses_while_another_runs_and_clean_up_waits_for_it(
        tmp_path: Path, pg_server: pgserver.Server, database: str, clis: list[Cli],
        capsys: pytest.CaptureFixture[str]) -> None:
    r = make_restorable(tmp_path, pg_server, database, capsys)
    first = start_restore(r, "restore.verify:pause")
    clis.append(first)
    marker = asyncio.run(wait_for_pause(r.pause_dir, "restore.verify", first))
    [copy] = strays(r)
    code, _, err = in_process(capsys, "restore", "test", "--clean-up", "--config", str(r.config))
    assert code == 2 and "another restore of" in err and "is running" in err
    assert strays(r) == [copy]  # the running restore's copy was not touched
    assert "restore" not in health_checks(r, capsys)  # a restore running now is no leftover
    marker.unlink()
    assert first.finish().proc.returncode == 0, first.err
    assert strays(r) == [] and asyncio.run(fingerprint(r.url)) == (100, 5050)


@pytest.mark.parametrize("point", ["restore.verify", "restore.swap", "restore.undo"])
def test_restore_loses_its_sessions_at_a_step(tmp_path: Path, pg_server: pgserver.Server, database: str,
                                              clis: list[Cli], capsys: pytest.CaptureFixture[str],
                                              point: str) -> None:
    """Every session of the CLI terminated by the server at this step (what a PostgreSQL restart does to it)."""
    r = make_restorable(tmp_path, pg_server, database, capsys)
    fault = ("restore.swap:pause,restore.undo:pause" if point == "restore.undo" else f"{point}:pause")
    cli = start_restore(r, fault)
    clis.append(cli)
    for reached in (["restore.swap", "restore.undo"] if point == "restore.undo" else [point]):
        marker = asyncio.run(wait_for_pause(r.pause_dir, reached, cli))
        assert asyncio.run(terminate_sessions_of(r.admin_url, cli.proc.pid)) >= 1
        marker.unlink()
    cli.finish()
    assert cli.proc.returncode == 2, (cli.out, cli.err)
    assert "Traceback" not in cli.err and "internal error" not in cli.err, cli.err
    [message] = [line for line in cli.err.splitlines() if line.startswith("migrabot:")]
    assert "lost the database connection" in message or "terminating connection" in message, message
    if point == "restore.undo":  # putting back failed too: the message names what is left and the command
        assert "putting the original back failed too" in message and "migrabot restore test --clean-up" in message
        code, _, err = in_process(capsys, "status", "test", "--config", str(r.config))
        assert code == 2 and "does not accept connections" in err
        left = strays(r)
        assert left and all(copy in message for copy in left)
        done = clean_up(r, capsys)
        assert all(f"dropped {copy}" in done for copy in left)
    else:
        assert "is back in place and unchanged" in message or "was not changed" in message, message
        assert "dropped" in message and "could not be dropped" not in message
    assert strays(r) == []
    assert_original_intact(r)


def test_pg_restore_loses_its_connection(tmp_path: Path, pg_server: pgserver.Server, database: str,
                                         clis: list[Cli], capsys: pytest.CaptureFixture[str]) -> None:
    r = make_restorable(tmp_path, pg_server, database, capsys, rows=300_000)
    cli = start_restore(r)
    clis.append(cli)

    async def cut_pg_restore() -> None:  # as soon as pg_restore works on the copy: end its sessions
        conn = await asyncpg.connect(r.admin_url)
        try:
            while not await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE starts_with(datname, $1) "
                    "AND application_name = 'pg_restore' AND state = 'active'", f"{r.db}__restore_"):
                assert cli.proc.poll() is None, f"pg_restore was never seen working: {cli.finish()}"
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    asyncio.run(cut_pg_restore())
    cli.finish()
    assert cli.proc.returncode == 2 and "Traceback" not in cli.err and "internal error" not in cli.err, cli.err
    [message] = [line for line in cli.err.splitlines() if line.startswith("migrabot:")]
    assert "lost the database connection while restoring" in message and f"{r.db} was not changed" in message
    assert "the partial copy was dropped" in message and "may be damaged" not in message
    assert strays(r) == []
    assert_original_intact(r)


def test_safety_snapshot_loses_pg_dump(tmp_path: Path, pg_server: pgserver.Server, database: str,
                                       clis: list[Cli], capsys: pytest.CaptureFixture[str]) -> None:
    r = make_restorable(tmp_path, pg_server, database, capsys)

    async def scenario() -> None:
        locker = await _locked_users(r.url)
        try:
            cli = start_restore(r)
            clis.append(cli)
            dump = await wait_for_session(r.admin_url, "datname = $1 AND application_name = 'pg_dump'", r.db,
                                          cli=cli)
            await query(r.admin_url, "SELECT pg_terminate_backend($1)", dump)
            await asyncio.to_thread(cli.finish)
        finally:
            await locker.close()
        assert cli.proc.returncode == 2 and "Traceback" not in cli.err, cli.err
        assert "the safety snapshot failed" in cli.err and "nothing was restored" in cli.err

    asyncio.run(scenario())
    assert strays(r) == []
    assert_original_intact(r)


# --- migrabot serve -------------------------------------------------------------------------------------


async def start_run(b: Served) -> str:
    """`/migrate staging`, tick, Run (as tests/test_migrate_restart.py does); the run message's ts."""
    await b.driver.slash(ALICE, "/migrate", "staging", CHANNEL)
    await wait_for(lambda: b.slack.messages(CHANNEL)
                   and "Database backup: backup pre-flight" in str(b.slack.messages(CHANNEL)[0].blocks), timeout=60)
    ts = b.slack.messages(CHANNEL)[0].ts
    deadline = time.monotonic() + 60
    while "'action_id': 'run'" not in str((msg := b.slack.message(CHANNEL, ts)).blocks):  # type: ignore[union-attr]
        # "Review" becomes an option once the SQL is all in the thread (it is posted paced for Slack)
        assert time.monotonic() < deadline, f"the Run button never appeared: {msg}"
        options = [o["value"] for block in msg.blocks if block["type"] == "actions"  # type: ignore[union-attr]
                   for e in block["elements"] if e["type"] == "checkboxes" for o in e["options"]]
        await b.driver.check(ALICE, CHANNEL, ts, "checklist", options)
        await asyncio.sleep(0.5)
    await b.driver.click(ALICE, CHANNEL, ts, "run")
    return ts


async def test_serve_killed_while_a_migration_runs_says_still_running_never_failed(
        tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging_url = pg_server.url_for(database)
    # longer than the restart takes, so the recovery finds it still running
    monkeypatch.setitem(test_migrate_restart.MIGRATIONS, "20240102000000_slow",
                        'SELECT pg_sleep(7);\nALTER TABLE "users" ADD COLUMN "nick" TEXT;')
    async with served_bot(tmp_path, staging_url, pg_server.url_for(prod_database)) as b:
        ts = await start_run(b)
        pid = await wait_for_session(pg_server.admin_url, "datname = $1 AND wait_event = 'PgSleep'", database,
                                     process=b.proc)
        b.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(b.proc.wait(), timeout=10)
        async with bot_stack(b.config) as s2:
            s2.slack._channel_msgs, s2.slack._by_ts = b.slack._channel_msgs, b.slack._by_ts
            await s2.wf.run(recover(s2.wf))
            await s2.settle()
            text = s2.text_of(s2.slack.message(CHANNEL, ts))  # type: ignore[arg-type]
            assert f"still running in pid {pid}" in text and "/migrate status staging" in text, text
            assert "failed" not in text.lower().replace("not failed", ""), text
            assert "rolled back" not in text
            await wait_until_gone(pg_server.admin_url, pid)
            # the restarted bot looks again and says, in the step and the thread, how it ended
            await wait_for(lambda: "it then ended: applied" in s2.text_of(s2.slack.message(CHANNEL, ts)),  # type: ignore[arg-type]
                           timeout=30)
            await s2.settle()
            said = [m.text for m in s2.slack.message(CHANNEL, ts).replies]  # type: ignore[union-attr]
            assert any("20240102000000_slow" in t and "it then ended: applied" in t for t in said), said
            # the killed bot's migration committed on the server: applied once, and status says so
            counts = await finished_rows(staging_url)
            assert counts == {"20240101000000_init": 1, "20240102000000_slow": 1}
            assert "20240103000000_more" not in counts  # never re-run or continued by the restart
            status = await query(staging_url, "SELECT count(*) AS n FROM _prisma_migrations WHERE finished_at IS NULL")
            assert status[0]["n"] == 0


async def test_serve_killed_while_restoring_drops_the_half_restored_copy_on_restart(
        tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str) -> None:
    """`/rollback staging` killed at the verify step (its copy filled): the restart says so and drops the copy."""
    staging_url = pg_server.url_for(database)
    await query(staging_url, "CREATE TABLE kept (id int)")
    await query(staging_url, "INSERT INTO kept VALUES (1), (2)")
    async with served_bot(tmp_path, staging_url, pg_server.url_for(prod_database),
                          extra_env={"MIGRABOT_FAULT_POINT": "restore.verify"}) as b:
        chosen = await take_backup(staging_url, tmp_path / "backups", "staging", reason="test", requested_by="test")
        await b.driver.slash(ALICE, "/rollback", "staging", CHANNEL)
        await wait_for(lambda: b.slack.messages(CHANNEL)
                       and "choose_backup" in str(b.slack.messages(CHANNEL)[0].blocks), timeout=60)
        ts = b.slack.messages(CHANNEL)[0].ts
        await b.driver.select(ALICE, CHANNEL, ts, "choose_backup", chosen.id)
        await wait_for(lambda: "'action_id': 'run'" in str(b.slack.message(CHANNEL, ts).blocks),  # type: ignore[union-attr]
                       timeout=60)
        await b.driver.click(ALICE, CHANNEL, ts, "run")
        await wait_for(lambda: b.slack.open_views(ALICE), timeout=30)
        (view,) = b.slack.open_views(ALICE)
        await b.driver.submit_view(ALICE, view.id, {"confirm_input": {"value": "RESTORE"}})
        await asyncio.wait_for(b.proc.wait(), timeout=90)  # SIGKILLed by the fault point
        db = database_name(staging_url)
        copies = [d for d in await databases_like(pg_server.admin_url, db) if "__restore_" in d]
        assert copies, "the restore was killed before it filled its copy"
        async with bot_stack(b.config) as s2:
            s2.slack._channel_msgs, s2.slack._by_ts = b.slack._channel_msgs, b.slack._by_ts
            await s2.wf.run(recover(s2.wf))
            await s2.settle()
            text = s2.text_of(s2.slack.message(CHANNEL, ts))  # type: ignore[arg-type]
        assert f"dropped {copies[0]}" in text and "interrupted" in text.lower(), text
        assert [d for d in await databases_like(pg_server.admin_url, db) if "__restore_" in d] == []
        rows = await query(staging_url, "SELECT count(*) AS n FROM kept")
        assert rows[0]["n"] == 2  # the original, untouched, under its own name
