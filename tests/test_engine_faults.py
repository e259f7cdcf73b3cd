"""The engine after a fault: no row the user did not cause, and every message true.

* session settings the server refuses leave no ``_prisma_migrations`` row (no P3009 afterwards);
* a file that fails half-way says which statements are committed, which were rolled back with
  the file's own ``BEGIN … COMMIT``, and which never ran, and gives the next step that fits;
* a connection lost mid-migration (the backend terminated from another session) is one sentence
  with what happened, the state, and what to do; the row records it;
* ``status`` never calls a migration FAILED while another process is still applying it.

Real processes: ``migrabot deploy`` runs as a subprocess, and the fault comes from another
connection (``pg_terminate_backend``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from actions.deploy import deploy
from actions.errors import ActionError
from bot.cli import main
from bot.cli.engine_cmd import describe_deploy, describe_status
from tests.conftest import ROOT
from tests.engine_helpers import fetchval, make_migrations, rows


async def row_count(url: str) -> int:
    if await fetchval(url, "SELECT to_regclass('_prisma_migrations')") is None:
        return 0
    return int(await fetchval(url, "SELECT count(*) FROM _prisma_migrations"))


# --- session settings before the row ------------------------------------------------------------


@pytest.mark.parametrize("sql", ["CREATE TABLE a (x int);", "CREATE TABLE a (x int);\nCREATE INDEX CONCURRENTLY "
                                                            "a_x ON a (x);"])
@pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
async def test_settings_the_server_refuses_leave_no_row(database_url: str, tmp_path: Path, sql: str,
                                                        setting: str) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": sql})
    too_long = 2_147_484.0  # seconds: 1 ms over PostgreSQL's limit
    with pytest.raises(ActionError) as info:
        if setting == "lock_timeout":
            await deploy(database_url, folder, lock_timeout=too_long)
        else:
            await deploy(database_url, folder, statement_timeout=too_long)
    message = str(info.value)
    assert setting in message and "PostgreSQL refused" in message and "integer range" in message
    assert "nothing was applied" in message and message.count("\n") == 0
    assert await row_count(database_url) == 0
    assert await fetchval(database_url, "SELECT to_regclass('a')") is None
    # the next deploy is not blocked by a failed row (Prisma's P3009)
    result = await deploy(database_url, folder)
    assert result.ok and [m.name for m in result.applied] == ["01_a"]


# --- a file that fails half-way --------------------------------------------------------------------


async def test_own_begin_commit_that_fails_says_what_was_rolled_back(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_own": "CREATE TABLE before_it (x int);\nBEGIN;\nCREATE TABLE inside (x int);\nSELECT 1/0;\nCOMMIT;\n"
                  "CREATE TABLE after_it (x int);",
    })
    result = await deploy(database_url, folder)
    failed = result.failed
    assert failed is not None and failed.progress is not None and failed.logs is not None
    assert failed.progress.committed == [1] and failed.progress.rolled_back == [2, 3]
    assert failed.progress.failed == 4 and failed.progress.not_run == [5, 6]
    assert "the statements before it are committed" not in failed.logs
    assert "statement 1 of 6 is committed" in failed.logs
    assert "statements 2-3 were rolled back with the file's own transaction" in failed.logs
    assert await fetchval(database_url, "SELECT to_regclass('before_it')") == "before_it"
    assert await fetchval(database_url, "SELECT to_regclass('inside')") is None
    text = describe_deploy("test", result)
    assert "--applied 01_own" in text and "by hand" in text
    assert "deploy reruns it" not in text


async def test_own_transaction_failing_before_anything_committed_can_simply_be_rerun(
        database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_own": "BEGIN;\nCREATE TABLE inside (x int);\nSELECT 1/0;\nCOMMIT;"})
    result = await deploy(database_url, folder)
    assert result.failed is not None and result.failed.progress is not None and result.failed.logs is not None
    assert result.failed.progress.committed == []
    assert "no statement of this file is committed" in result.failed.logs
    assert "--rolled-back 01_own" in describe_deploy("test", result)


async def test_non_transactional_failure_reports_progress_and_the_right_next_step(
        database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_idx": "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_q "
                  "ON t (nope);\nCREATE TABLE after_it (x int);",
    })
    result = await deploy(database_url, folder)
    assert result.failed is not None and result.failed.progress is not None and result.failed.logs is not None
    progress = result.failed.progress
    assert progress.committed == [1, 2] and progress.failed == 3 and progress.not_run == [4]
    assert result.to_dict()["failed"]["progress"]["committed"] == [1, 2]
    assert "statements 1-2 of 4 are committed" in result.failed.logs
    text = describe_deploy("test", result)
    assert "statements 1-2 of 4 are committed" in text and "--applied 01_idx" in text
    # the status (from the row alone, in another process later) gives the same advice
    from actions.status import migration_status

    status = await migration_status(database_url, folder)
    shown = describe_status("test", status)
    assert "partly applied" in shown and "--applied 01_idx" in shown and "deploy reruns it" not in shown
    with pytest.raises(ActionError) as refused:
        await deploy(database_url, folder)
    assert "partly applied" in str(refused.value) and "P3009" in str(refused.value)


# --- a lost connection, and a status taken while another process applies ---------------------------


def _write_config(tmp_path: Path, url: str, folder: Path) -> Path:
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.test]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n')
    return config


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL")}


def _start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot", *argv], cwd=ROOT, env=_cli_env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _wait_for_backend(url: str, like: str, *, proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """The pid of the session whose query matches ``like`` (fails early when ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(url)
    try:
        while time.monotonic() < deadline:
            pid = await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND query LIKE $1 AND pid <> pg_backend_pid() LIMIT 1", like)
            if pid:
                return int(pid)
            assert proc.poll() is None, f"the command ended early: {proc.communicate()}"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"no session ran {like} within {timeout}s")


async def _terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def _cut_while_blocked(url: str, lock: list[str], argv: list[str], like: str) -> tuple[int, str]:
    """Run ``migrabot ARGV`` while ``lock`` (SQL) holds a table it reads; terminate its session once it
    waits on ``like``. Returns the exit code and stderr."""
    async def scenario() -> tuple[int, str]:
        locker = await asyncpg.connect(url)
        try:
            for sql in lock:
                await locker.execute(sql)
            proc = _start(*argv)
            try:
                pid = await _wait_for_backend(url, like, proc=proc)
                await _terminate(url, pid)
                _, err = await asyncio.to_thread(proc.communicate, timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            return proc.returncode, err
        finally:
            await locker.close()

    return asyncio.run(scenario())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_while_another_process_applies_then_a_lost_connection(
        database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);",
                                              "02_slow": "CREATE TABLE b (x int);\nSELECT pg_sleep(60);"})
    config = _write_config(tmp_path, database_url, folder)
    proc = _start("deploy", "test", "--config", str(config))
    try:
        pid = asyncio.run(_wait_for_backend(database_url, "%pg_sleep(60)%", proc=proc))
        code, out, _ = _run(capsys, "status", "test", "--config", str(config))
        assert code == 1
        assert "FAILED" not in out and "resolve" not in out
        assert f"02_slow: still running in pid {pid}" in out
        code, out, _ = _run(capsys, "status", "test", "--config", str(config), "--json")
        data = json.loads(out)
        assert data["failed"] == [] and [(r["name"], r["pid"]) for r in data["running"]] == [("02_slow", pid)]
        code, out, _ = _run(capsys, "health", "test", "--config", str(config), "--json")
        check = next(c for c in json.loads(out)["checks"] if c["name"] == "migrations")
        assert check["status"] == "warn" and f"pid {pid}" in check["reason"]

        asyncio.run(_terminate(database_url, pid))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2
    assert "Traceback" not in err and "internal error" not in err, err
    assert len([line for line in err.splitlines() if not line.startswith("note:")]) == 1, "one sentence"
    assert "lost the database connection while applying 02_slow" in err
    assert "rolled back" in err and "--rolled-back 02_slow" in err
    assert asyncio.run(fetchval(database_url, "SELECT to_regclass('b')")) is None
    [_, row] = asyncio.run(rows(database_url))
    assert row["finished_at"] is None and "connection" in row["logs"]
    # now nobody holds the lock: the row is a failure, told as one
    code, out, _ = _run(capsys, "status", "test", "--config", str(config))
    assert "FAILED: 02_slow" in out and "still running" not in out and "--rolled-back 02_slow" in out


def test_lost_connection_half_way_through_a_non_transactional_file(
        database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_idx": "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nSELECT pg_sleep(60);\n"
                  "CREATE TABLE after_it (x int);"})
    config = _write_config(tmp_path, database_url, folder)
    proc = _start("deploy", "test", "--config", str(config))
    try:
        pid = asyncio.run(_wait_for_backend(database_url, "%pg_sleep(60)%", proc=proc))
        asyncio.run(_terminate(database_url, pid))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2 and "Traceback" not in err and "internal error" not in err
    assert "statements 1-2 of 4 are committed" in err and "statement 3" in err and "interrupted" in err
    assert "--applied 01_idx" in err
    assert asyncio.run(fetchval(database_url, "SELECT to_regclass('t_x')")) == "t_x"
    _, out, _ = _run(capsys, "status", "test", "--config", str(config))
    assert "partly applied" in out and "deploy reruns it" not in out


def test_status_whose_connection_is_cut_is_one_sentence(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"})
    config = _write_config(tmp_path, database_url, folder)
    assert main(["deploy", "test", "--config", str(config)]) == 0

    code, err = _cut_while_blocked(database_url, ["BEGIN; LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE"],
                                   ["status", "test", "--config", str(config)], "%FROM _prisma_migrations%")
    assert code == 2 and "Traceback" not in err and "internal error" not in err, err
    assert "lost the database connection" in err and "nothing was changed" in err


def test_report_whose_connection_is_cut_is_one_sentence(database_url: str, tmp_path: Path) -> None:
    """The monitoring report waits on a locked table's size; its session is then terminated."""
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"})
    config = _write_config(tmp_path, database_url, folder)

    code, err = _cut_while_blocked(
        database_url, ["CREATE TABLE big (x int)", "BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE"],
        ["report", "test", "--config", str(config)], "%pg_total_relation_size%")
    assert code == 2 and "Traceback" not in err and "internal error" not in err, err
    assert "lost the database connection while running the monitoring queries" in err and err.count("\n") == 1
    assert "nothing was changed" in err


async def test_a_dry_run_checks_the_session_settings_too(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"})
    with pytest.raises(ActionError, match="PostgreSQL refused the session settings"):
        await deploy(database_url, folder, lock_timeout=2_147_484.0, dry_run=True)
    assert (await deploy(database_url, folder, dry_run=True)).pending == ["01_a"]
