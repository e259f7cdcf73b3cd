"""Backups that cannot finish say why, and leave nothing that looks like a backup in progress.

* pg_dump gives up waiting for a table lock (``--lock-wait-timeout``) instead of waiting forever,
  and the error names the lock it waited for;
* a failed pg_dump/pg_restore is reported with its error lines, however much it printed after them;
* SIGTERM during ``migrabot backup`` removes the unfinished folder and stops pg_dump; after a
  kill -9 the folder is listed as interrupted, not as running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from actions import pgtools
from actions.backup import take_backup
from actions.errors import ActionError
from bot.cli import main
from tests.conftest import ROOT


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _locked(url: str) -> asyncpg.Connection:
    """A session holding ACCESS EXCLUSIVE on table t (what a running migration does)."""
    await _execute(url, "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)")
    locker = await asyncpg.connect(url)
    await locker.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    return locker


async def test_pg_dump_gives_up_waiting_for_a_lock_and_names_it(database_url: str, tmp_path: Path) -> None:
    locker = await _locked(database_url)
    try:
        started = time.monotonic()
        with pytest.raises(ActionError) as err:
            await asyncio.wait_for(take_backup(database_url, tmp_path / "b", "dev", reason="t", requested_by="t",
                                               lock_wait_timeout=1.0), timeout=60)
        assert time.monotonic() - started < 30
    finally:
        await locker.close()
    message = str(err.value)
    assert "gave up waiting 1s for a table lock" in message and "LOCK TABLE public.t" in message
    assert "migrabot blockers" in message
    assert list((tmp_path / "b" / "dev").iterdir()) == []


async def test_pg_tool_failure_is_reported_with_its_error_line(database_url: str, tmp_path: Path) -> None:
    """pg_restore's "Command was:" of a wide table is longer than 600 characters: the ERROR line comes first."""
    columns = ", ".join(f"a_rather_long_column_name_number_{i} integer" for i in range(60))
    await _execute(database_url, f"CREATE TABLE wide ({columns})")
    info = await take_backup(database_url, tmp_path / "b", "dev", reason="t", requested_by="t")
    tool = pgtools.find_pg_tool("pg_restore", info.manifest["pg_dump"]["major"])
    conninfo, env = pgtools.libpq_args(database_url)
    with pytest.raises(ActionError) as err:
        # restoring over the existing table fails on its CREATE TABLE
        await pgtools.run_tool([tool.path, "--exit-on-error", "--no-owner", "-d", conninfo, info.dump_path], env,
                               timeout=60, what="pg_restore")
    message = str(err.value)
    assert 'ERROR:  relation "wide" already exists' in message or 'relation "wide" already exists' in message
    assert len(message) < 1500


def test_error_lines_come_before_the_noise() -> None:
    stderr = ("pg_restore: connecting to database for restore\n"
              "pg_restore: error: could not execute query: ERROR:  relation \"wide\" already exists\n"
              "Command was: CREATE TABLE public.wide (\n" + "    col integer,\n" * 200 + ");\n"
              "pg_restore: warning: errors ignored on restore: 1\n")
    summary = pgtools.error_summary(stderr)
    assert summary.startswith('pg_restore: error: could not execute query: ERROR:  relation "wide" already exists')
    assert "col integer" not in summary and "errors ignored on restore: 1" in summary
    assert pgtools.error_summary("just one line\n") == "just one line"


# --- a signal during `migrabot backup` ------------------------------------------------------------------


def _backup_process(tmp_path: Path, url: str) -> tuple[subprocess.Popen[str], Path]:
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.dev]\ndatabase_url = "{url}"\nbackup_dir = "backups"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "backup", "dev", "--config", str(config)], cwd=ROOT,
                            env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, config


async def _pg_dump_pids(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pg_dump'")]
    finally:
        await conn.close()


async def _wait_for_pg_dump(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not await _pg_dump_pids(url):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "pg_dump never connected"
        await asyncio.sleep(0.05)


async def test_sigterm_during_a_backup_leaves_no_running_folder_and_no_pg_dump(
        database_url: str, tmp_path: Path) -> None:
    locker = await _locked(database_url)  # pg_dump waits on it: the backup is in progress for a while
    try:
        proc, _ = _backup_process(tmp_path, database_url)
        try:
            await _wait_for_pg_dump(database_url, proc)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
        assert "stopped by SIGTERM" in err
        folder = tmp_path / "backups" / "dev"
        assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []
        # pg_dump was stopped and cancelled its query: its session does not linger behind the lock
        deadline = time.monotonic() + 5  # (the lock is still held: without the cancel it would stay)
        while await _pg_dump_pids(database_url):
            assert time.monotonic() < deadline, "pg_dump's session is still waiting after the CLI stopped"
            await asyncio.sleep(0.1)
    finally:
        await locker.close()


async def test_a_backup_killed_outright_is_listed_as_interrupted(database_url: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    locker = await _locked(database_url)
    try:
        proc, config = _backup_process(tmp_path, database_url)
        try:
            await _wait_for_pg_dump(database_url, proc)
            proc.kill()  # kill -9: nothing of ours runs on the way out
            await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for pid in await _pg_dump_pids(database_url):  # the orphaned pg_dump
            await _execute(database_url, f"SELECT pg_terminate_backend({pid})")
    finally:
        await locker.close()
    assert await asyncio.to_thread(main, ["backups", "dev", "--json", "--config", str(config)]) == 0
    [backup] = json.loads(capsys.readouterr().out)["backups"]
    assert backup["status"] == "interrupted" and backup["verified"] is False


async def test_a_connection_cut_during_the_backup_preflight_is_one_sentence(database_url: str,
                                                                           tmp_path: Path) -> None:
    from actions.prisma_table import TABLE_DDL

    await _execute(database_url, TABLE_DDL)
    locker = await asyncpg.connect(database_url)
    await locker.execute("BEGIN; LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE")
    try:
        proc, _ = _backup_process(tmp_path, database_url)
        try:
            deadline = time.monotonic() + 30
            conn = await asyncpg.connect(database_url)
            try:
                while not (pid := await conn.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%FROM _prisma_migrations%' "
                        "AND pid <> pg_backend_pid() AND datname = current_database()")):
                    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                    await asyncio.sleep(0.05)
                await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await conn.close()
            _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        await locker.close()
    assert proc.returncode == 2 and "Traceback" not in err and "internal error" not in err, err
    assert "lost the database connection" in err and "nothing was written" in err
    assert not (tmp_path / "backups" / "dev").exists() or list((tmp_path / "backups" / "dev").iterdir()) == []
