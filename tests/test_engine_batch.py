"""Files that only create new objects share a round trip; each keeps its own started row and transaction.

A failing file stops the string there (the files before it stay applied and recorded, its row is
failed, the ones after it never started), a lock timeout is retried alone on the same row, and a
connection lost half-way is explained file by file.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

import asyncpg
import pytest

from actions.deploy import BATCH_FILES, DeployEvent, _batch, deploy
from actions.errors import ActionError
from actions.migrations_dir import read_migrations
from actions.status import migration_status
from bot.config import RetryPolicy
from tests.engine_helpers import fetchval, make_migrations, rows


def _quick(count: int, **special: str) -> dict[str, str]:
    return {f"{i:02d}_t{i}": special.get(f"t{i}", f"CREATE TABLE t{i} (id serial PRIMARY KEY);\n"
                                                  f"CREATE INDEX t{i}_i ON t{i} (id);")
            for i in range(1, count + 1)}


def test_only_quick_transactional_files_are_batched(tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        **_quick(3), "04_alter": "ALTER TABLE t1 ADD COLUMN x int;", **{f"05_{k}": v for k, v in _quick(2).items()},
        "06_conc": "CREATE TABLE c (x int);\nCREATE INDEX CONCURRENTLY c_x ON c (x);"})
    local = read_migrations(folder)
    assert [m.name for m in _batch(local)] == ["01_t1", "02_t2", "03_t3"]
    assert _batch(local[3:]) == []  # an ALTER of an existing table: alone, looking before each attempt
    assert [m.name for m in _batch(local[4:])] == ["05_01_t1", "05_02_t2"]
    assert _batch(local[6:]) == []
    many = read_migrations(make_migrations(tmp_path / "many", _quick(BATCH_FILES + 5)))
    assert len(_batch(many)) == BATCH_FILES


async def test_a_batch_writes_the_rows_prisma_writes(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", _quick(5))
    events: list[DeployEvent] = []
    result = await deploy(database_url, folder, on_event=events.append)
    assert result.ok and [m.name for m in result.applied] == [f"{i:02d}_t{i}" for i in range(1, 6)]
    assert [(e.kind, e.migration) for e in events] == [
        (kind, f"{i:02d}_t{i}") for i in range(1, 6) for kind in ("started", "finished")]
    found = await rows(database_url)
    assert [r["migration_name"] for r in found] == [f"{i:02d}_t{i}" for i in range(1, 6)]
    for r in found:
        data = (folder / r["migration_name"] / "migration.sql").read_bytes()
        assert r["checksum"] == hashlib.sha256(data).hexdigest()
        assert r["applied_steps_count"] == 1 and r["logs"] is None and r["rolled_back_at"] is None
        assert r["started_at"] <= r["finished_at"]
    assert all(a["finished_at"] <= b["started_at"] for a, b in itertools.pairwise(found))


async def test_a_failing_file_in_a_batch_stops_there(database_url: str, tmp_path: Path) -> None:
    failing = "CREATE TABLE t3 (id int);\nCREATE TABLE t3b (x nosuchtype);"
    folder = make_migrations(tmp_path / "m", _quick(5, t3=failing))
    result = await deploy(database_url, folder)
    assert [m.name for m in result.applied] == ["01_t1", "02_t2"]
    assert result.failed is not None and result.failed.name == "03_t3"
    assert 'type "nosuchtype" does not exist' in (result.failed.logs or "")
    assert "at line 2: CREATE TABLE t3b" in (result.failed.logs or "")
    found = await rows(database_url)
    assert [(r["migration_name"], r["finished_at"] is not None) for r in found] == [
        ("01_t1", True), ("02_t2", True), ("03_t3", False)]
    assert found[2]["applied_steps_count"] == 0 and "nosuchtype" in found[2]["logs"]
    assert await fetchval(database_url, "SELECT to_regclass('t3')") is None
    assert await fetchval(database_url, "SELECT to_regclass('t4')") is None
    status = await migration_status(database_url, folder)
    assert [f.name for f in status.failed] == ["03_t3"] and status.pending == ["04_t4", "05_t5"]


async def _hold_name(url: str, table: str) -> asyncpg.Connection:
    """Another session creating ``table`` in an open transaction: a second CREATE of it waits."""
    other = await asyncpg.connect(url)
    await other.execute(f"BEGIN; CREATE TABLE {table} (other int)")
    return other


async def test_a_lock_timeout_in_a_batch_is_retried_alone_on_the_same_row(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", _quick(5))
    await fetchval(database_url, "SELECT 1")
    other = await _hold_name(database_url, "t3")
    events: list[DeployEvent] = []

    async def release() -> None:
        await asyncio.sleep(0.8)
        await other.execute("ROLLBACK")

    releasing = asyncio.create_task(release())
    try:
        result = await deploy(database_url, folder, lock_timeout=0.2, on_event=events.append,
                              retry=RetryPolicy(max_attempts=50, base_delay=0.1, max_delay=0.2, max_total=30))
    finally:
        await releasing
        await other.close()
    assert result.ok and len(result.applied) == 5
    assert next(m for m in result.applied if m.name == "03_t3").attempts > 1
    assert any(e.kind == "retrying" and e.migration == "03_t3" for e in events)
    assert [e.migration for e in events if e.kind == "started"] == [f"{i:02d}_t{i}" for i in range(1, 6)]
    found = await rows(database_url)
    assert [r["migration_name"] for r in found] == [f"{i:02d}_t{i}" for i in range(1, 6)]
    assert all(r["finished_at"] is not None and r["applied_steps_count"] == 1 for r in found)


async def test_a_connection_lost_half_way_through_a_batch_is_explained(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", _quick(5))
    await fetchval(database_url, "SELECT 1")
    other = await _hold_name(database_url, "t3")
    admin = await asyncpg.connect(database_url)

    async def cut() -> None:  # once the batch waits at 03 (lock_timeout 0: no limit), end its backend
        for _ in range(200):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'migrabot' "
                "AND datname = current_database()")
            if pid:
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                return
            await asyncio.sleep(0.05)
        await other.execute("ROLLBACK")  # never seen waiting: let the deploy end (the assertions then fail)

    cutting = asyncio.create_task(cut())
    try:
        with pytest.raises(ActionError) as raised:
            await deploy(database_url, folder, lock_timeout=0)
    finally:
        await cutting
        await other.close()
        await admin.close()
    message = raised.value.message
    assert "lost the database connection while applying 03_t3" in message
    assert "01_t1, 02_t2 before it committed" in message and "rolled back" in message
    assert "--rolled-back 03_t3" in message
    found = await rows(database_url)
    assert [(r["migration_name"], r["finished_at"] is not None) for r in found] == [
        ("01_t1", True), ("02_t2", True), ("03_t3", False)]
    assert "connection" in found[2]["logs"]
    assert await fetchval(database_url, "SELECT to_regclass('t2')") == "t2"
