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


async def test_migration_retries_behind_a_reader_without_stalling_the_app(database_url: str, tmp_path: Path) -> None:
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_alter": "ALTER TABLE t ADD COLUMN note text;"})
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "long-report"})
    await holder.execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
    stop, stalls = asyncio.Event(), []
    probe = asyncio.create_task(_probe(database_url, stop, stalls))
    events: list[DeployEvent] = []

    async def release_later() -> None:
        await asyncio.sleep(2.0)
        await holder.execute("COMMIT")

    releaser = asyncio.create_task(release_later())
    try:
        result = await deploy(database_url, folder, lock_timeout=LOCK_TIMEOUT,
                              retry=RetryPolicy(max_attempts=100, max_total=30, base_delay=0.05, max_delay=0.3),
                              on_event=events.append)
        await releaser
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await probe
        await holder.close()
    assert result.ok and result.applied[0].attempts > 1
    retries = [e for e in events if e.kind == "retrying"]
    assert retries and all(holder_pid_in(e, holder) for e in retries)
    assert any("LOCK TABLE t" in (b.query or "") for b in retries[0].blockers)
    assert await fetchval(database_url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'")
    (row,) = await rows(database_url)
    assert row["finished_at"] is not None and row["logs"] is None  # retries left no failed row behind
    assert len(stalls) > 5  # the app kept running throughout
    assert max(stalls) < LOCK_TIMEOUT + 0.5, f"the application waited {max(stalls):.2f}s"


def holder_pid_in(event: DeployEvent, holder: asyncpg.Connection) -> bool:
    return holder.get_server_pid() in {b.pid for b in event.blockers}


async def test_retries_exhausted_fail_cleanly(database_url: str, tmp_path: Path) -> None:
    await _busy_table(database_url)
    folder = make_migrations(tmp_path / "m", {"01_alter": "ALTER TABLE t ADD COLUMN note text;"})
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "stuck-job"})
    await holder.execute("BEGIN; SELECT * FROM t LIMIT 1")
    try:
        result = await deploy(database_url, folder, lock_timeout=0.2,
                              retry=RetryPolicy(max_attempts=3, max_total=10, base_delay=0.05, max_delay=0.1))
    finally:
        await holder.close()
    assert result.failed is not None and result.failed.attempts == 3
    assert "lock_timeout" in result.failed.logs and "stuck-job" in result.failed.logs
    assert await fetchval(database_url, "SELECT count(*) FROM information_schema.columns "
                                        "WHERE column_name = 'note'") == 0
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
