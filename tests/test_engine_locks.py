"""Lock safety: a migration never holds application queries for longer than lock_timeout,
retries until the blocker is gone, and two deploys never run at once (Prisma's advisory lock)."""

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

from actions.advisory_lock import PRISMA_LOCK_KEY
from actions.deploy import DeployEvent, deploy
from actions.errors import ActionError
from bot.config import RetryPolicy
from tests.conftest import ROOT
from tests.engine_helpers import fetchval, make_migrations, rows

LOCK_TIMEOUT = 0.3


async def _busy_table(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
    finally:
        await conn.close()


async def _probe(url: str, stop: asyncio.Event, stalls: list[float]) -> None:
    """The application: one query on the table every 50 ms, recording how long each took."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            await conn.fetchval("SELECT count(*) FROM t")
            stalls.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _deploy_behind(url: str, folder: Path, hold: float, mode: str = "ACCESS SHARE",
                         retry: RetryPolicy | None = None) -> tuple[object, list[DeployEvent], list[float], float, int]:
    """Deploy while a reader holds ``mode`` on t for ``hold`` seconds and the app queries t every 50 ms.

    Returns the result, the events, the app's query times, how long after the reader's end the deploy
    finished, and the reader's pid.
    """
    holder = await asyncpg.connect(url, server_settings={"application_name": "long-report"})
    await holder.execute(f"BEGIN; LOCK TABLE t IN {mode} MODE")
    stop, stalls = asyncio.Event(), []
    probe = asyncio.create_task(_probe(url, stop, stalls))
    events: list[DeployEvent] = []
    released = 0.0

    async def release_later() -> None:
        nonlocal released
        await asyncio.sleep(hold)
        await holder.execute("COMMIT")
        released = time.monotonic()

    releaser = asyncio.create_task(release_later())
    try:
        result = await deploy(url, folder, lock_timeout=LOCK_TIMEOUT,
                              retry=retry or RetryPolicy(max_attempts=100, max_total=30, base_delay=0.05,
                                                         max_delay=0.3), on_event=events.append)
        done = time.monotonic()
        await releaser
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await probe
        releaser.cancel()
        pid = holder.get_server_pid()
        await holder.close()
    return result, events, stalls, done - released, pid


async def test_migration_waits_for_a_reader_without_queueing_then_applies_at_once(
        database_url: str, tmp_path: Path) -> None:
    """The ALTER TABLE needs ACCESS EXCLUSIVE, the reader holds ACCESS SHARE: no attempt is made while it
    is there, so the application never queues behind the migration, and it applies as soon as the reader ends."""
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_alter": "ALTER TABLE t ADD COLUMN note text;"})
    result, events, stalls, after_release, pid = await _deploy_behind(database_url, folder, hold=2.0)
    assert result.ok and result.applied[0].attempts == 1  # one attempt: made when the reader had gone
    assert [e.kind for e in events if e.kind in ("waiting", "retrying")] == ["waiting"]  # reported once
    (waiting,) = [e for e in events if e.kind == "waiting"]
    assert pid in {b.pid for b in waiting.blockers} and "LOCK TABLE t" in (waiting.blockers[0].query or "")
    assert f"pid {pid} holds AccessShareLock on t" in (waiting.logs or "")
    assert "ACCESS EXCLUSIVE on t" in (waiting.logs or "")
    (finished,) = [e for e in events if e.kind == "finished"]
    assert finished.waited is not None and finished.waited > 1.0 and [b.pid for b in finished.blockers] == [pid]
    assert "waited" in finished.describe() and f"pid {pid}" in finished.describe()
    assert await fetchval(database_url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'")
    (row,) = await rows(database_url)
    assert row["finished_at"] is not None and row["logs"] is None
    assert len(stalls) > 5  # the app kept running throughout
    total_stall = sum(s for s in stalls if s > 0.1)
    assert total_stall < LOCK_TIMEOUT, f"the application stalled {total_stall:.2f}s in all"
    assert after_release < 1.5, f"applied {after_release:.2f}s after the reader ended"


async def test_a_statement_the_lock_table_does_not_know_retries_on_lock_timeout(
        database_url: str, tmp_path: Path) -> None:
    """No look is possible for an unknown statement (a DO block): it is attempted under lock_timeout and
    retried with backoff, each blocker reported, and the app waits at most lock_timeout each time."""
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_do": "DO $$ BEGIN PERFORM count(*) FROM t; END $$;"})
    # the reader's ACCESS EXCLUSIVE holds up the application itself: only the retries are looked at here
    result, events, _, _, pid = await _deploy_behind(database_url, folder, hold=1.5, mode="ACCESS EXCLUSIVE")
    assert result.ok and result.applied[0].attempts > 1
    retries = [e for e in events if e.kind == "retrying"]
    assert retries and all(pid in {b.pid for b in e.blockers} for e in retries)
    assert any("LOCK TABLE t" in (b.query or "") for b in retries[0].blockers)
    assert not [e for e in events if e.kind == "waiting"]
    (row,) = await rows(database_url)
    assert row["finished_at"] is not None and row["logs"] is None  # retries left no failed row behind


async def test_a_statement_after_a_non_transactional_one_waits_for_its_reader_too(
        database_url: str, tmp_path: Path) -> None:
    """A file run statement by statement (VACUUM) looks before each statement as well."""
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_vacuum": "VACUUM t;\nALTER TABLE t ADD COLUMN note text;"})
    result, events, stalls, after_release, pid = await _deploy_behind(database_url, folder, hold=1.5)
    assert result.ok and not result.applied[0].transactional and result.applied[0].attempts == 1
    (waiting,) = [e for e in events if e.kind == "waiting"]
    assert pid in {b.pid for b in waiting.blockers} and "statement 2 of 2" in (waiting.statement or "")
    total_stall = sum(s for s in stalls if s > 0.1)
    assert total_stall < LOCK_TIMEOUT, f"the application stalled {total_stall:.2f}s in all"
    assert after_release < 1.5


async def test_a_holder_that_stays_fails_the_migration_after_the_total_limit_without_an_attempt(
        database_url: str, tmp_path: Path) -> None:
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_alter": "ALTER TABLE t ADD COLUMN note text;"})
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "stuck-job"})
    await holder.execute("BEGIN; SELECT * FROM t LIMIT 1")
    events: list[DeployEvent] = []
    try:
        result = await deploy(database_url, folder, lock_timeout=0.2, on_event=events.append,
                              retry=RetryPolicy(max_attempts=3, max_total=1.0, base_delay=0.05, max_delay=0.1))
    finally:
        await holder.close()
    assert result.failed is not None and result.failed.attempts == 0
    logs = result.failed.logs or ""
    assert "queueing nothing" in logs and "stuck-job" in logs and "retry.max_total" in logs
    assert "holds AccessShareLock on t" in logs
    assert [e.kind for e in events] == ["started", "waiting", "failed"]
    assert await fetchval(database_url, "SELECT count(*) FROM information_schema.columns "
                                        "WHERE column_name = 'note'") == 0
    recorded = await rows(database_url)
    assert len(recorded) == 1 and recorded[0]["finished_at"] is None and "stuck-job" in recorded[0]["logs"]


async def test_retries_exhausted_fail_cleanly(database_url: str, tmp_path: Path) -> None:
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_do": "DO $$ BEGIN PERFORM count(*) FROM t; END $$;"})
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "stuck-job"})
    await holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    try:
        result = await deploy(database_url, folder, lock_timeout=0.2,
                              retry=RetryPolicy(max_attempts=3, max_total=10, base_delay=0.05, max_delay=0.1))
    finally:
        await holder.close()
    assert result.failed is not None and result.failed.attempts == 3
    assert "lock_timeout" in result.failed.logs and "stuck-job" in result.failed.logs
    recorded = await rows(database_url)
    assert len(recorded) == 1 and recorded[0]["finished_at"] is None and "stuck-job" in recorded[0]["logs"]


async def test_advisory_lock_held_elsewhere_fails_naming_the_holder(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"})
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "prisma-migrate"})
    await holder.execute(f"SELECT pg_advisory_lock({PRISMA_LOCK_KEY})")
    events: list[DeployEvent] = []
    try:
        with pytest.raises(ActionError) as err:
            await deploy(database_url, folder, advisory_lock_timeout=0.5, on_event=events.append)
    finally:
        await holder.close()
    assert f"pid {holder.get_server_pid()}" in str(err.value) and "prisma-migrate" in str(err.value)
    assert [e.kind for e in events] == ["waiting_for_lock"]
    assert await fetchval(database_url, "SELECT to_regclass('a')") is None


def _config(tmp_path: Path, url: str, folder: Path, **env: str) -> Path:
    extra = "".join(f'{k} = "{v}"\n' for k, v in env.items())
    path = tmp_path / "migrabot.toml"
    path.write_text(f'[environments.test]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n{extra}')
    return path


async def test_two_deploys_at_once_one_applies_the_other_finds_nothing(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_slow": "CREATE TABLE a (x int); SELECT pg_sleep(1.5);"})
    config = _config(tmp_path, database_url, folder, advisory_lock_timeout="20s")
    first = asyncio.create_task(deploy(database_url, folder))
    for _ in range(100):  # wait until the first run holds the lock
        if await fetchval(database_url, f"SELECT count(*) FROM pg_locks WHERE objid = {PRISMA_LOCK_KEY} "
                                        "AND locktype = 'advisory'"):
            break
        await asyncio.sleep(0.02)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "deploy", "test", "--json", "--config", str(config),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "MIGRABOT_CONFIG": ""})
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    result = await first
    assert [m.name for m in result.applied] == ["01_slow"]
    assert proc.returncode == 0, err.decode()
    second = json.loads(out)
    assert second["applied"] == [] and second["pending"] == [] and second["ok"]
    assert [e["kind"] for e in second["events"]] == ["waiting_for_lock"]
    assert len(await rows(database_url)) == 1
