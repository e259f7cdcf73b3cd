"""Partial rollback (the runbook's "Rollback last migration manually"), done atomically."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from actions.deploy import deploy
from actions.errors import ActionError
from actions.partial_rollback import plan_undo_last, undo_last
from actions.status import migration_status
from bot.config import RetryPolicy
from tests.engine_helpers import fetchval, make_migrations, rows


@pytest.mark.parametrize("down_file", ["down.sql", "rollback.sql"])
async def test_undo_last_with_inverse_sql(database_url: str, tmp_path: Path, down_file: str) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_base": "CREATE TABLE base (x int);",
        "02_feature": "CREATE TABLE new_feature_table (x int);",
    }, down={"02_feature": (down_file, "DROP TABLE IF EXISTS new_feature_table;")})
    assert (await deploy(database_url, folder)).ok
    plan = await plan_undo_last(database_url, folder)
    assert plan.migration == "02_feature" and plan.down_path == folder / "02_feature" / down_file
    assert plan.down_sql and "DROP TABLE" in plan.down_sql and plan.transactional
    result = await undo_last(database_url, folder, expected_migration="02_feature")
    assert result.ok and result.rows_deleted == 1
    assert await fetchval(database_url, "SELECT to_regclass('new_feature_table')") is None
    status = await migration_status(database_url, folder)
    assert status.pending == ["02_feature"] and status.applied == ["01_base"]
    assert (await deploy(database_url, folder)).ok  # and it can be applied again


async def test_undo_without_inverse_sql_suggests_a_backup(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_base": "CREATE TABLE base (x int);"})
    assert (await deploy(database_url, folder)).ok
    plan = await plan_undo_last(database_url, folder)
    assert plan.migration == "01_base" and plan.down_sql is None and plan.down_path is None
    assert plan.note and "down.sql" in plan.note and "backup" in plan.note
    with pytest.raises(ActionError, match="backup"):
        await undo_last(database_url, folder, expected_migration="01_base")
    assert (await migration_status(database_url, folder)).up_to_date


async def test_undo_refuses_when_the_last_migration_changed(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);", "02_b": "CREATE TABLE b (x int);"},
                             down={"02_b": ("down.sql", "DROP TABLE b;")})
    assert (await deploy(database_url, folder)).ok
    with pytest.raises(ActionError, match="02_b"):
        await undo_last(database_url, folder, expected_migration="01_a")
    assert await fetchval(database_url, "SELECT to_regclass('b')") is not None


async def test_failing_inverse_sql_changes_nothing(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"},
                             down={"01_a": ("down.sql", "DROP TABLE a; SELECT 1/0;")})
    assert (await deploy(database_url, folder)).ok
    result = await undo_last(database_url, folder, expected_migration="01_a")
    assert not result.ok and "division by zero" in (result.logs or "")
    assert await fetchval(database_url, "SELECT to_regclass('a')") is not None
    assert len(await rows(database_url)) == 1
    assert (await migration_status(database_url, folder)).up_to_date


async def test_undo_waits_for_a_reader_without_queueing_then_gives_up(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"},
                             down={"01_a": ("down.sql", "DROP TABLE a;")})
    assert (await deploy(database_url, folder)).ok
    holder = await asyncpg.connect(database_url)
    await holder.execute("BEGIN; SELECT * FROM a")
    try:
        result = await undo_last(database_url, folder, expected_migration="01_a", lock_timeout=0.2,
                                 retry=RetryPolicy(max_attempts=2, max_total=1, base_delay=0.05, max_delay=0.05))
    finally:
        await holder.close()
    # DROP TABLE needs ACCESS EXCLUSIVE; the reader holds ACCESS SHARE: no attempt queues behind it
    assert not result.ok and result.attempts == 0 and "queueing nothing" in (result.logs or "")
    assert "holds AccessShareLock on a" in (result.logs or "")
    assert await fetchval(database_url, "SELECT to_regclass('a')") is not None
    assert (await migration_status(database_url, folder)).up_to_date
