"""Rehearsals on a real server with the real pg_dump/pg_restore: measured locks, rewrites and scans, prod untouched.

The live database has a ``users`` table with 30 000 rows; the pending migrations are a safe
ADD COLUMN, a SET NOT NULL (scans), a change to bigint (rewrites), an index built CONCURRENTLY
(its own file, outside a transaction) and a lock held for a known time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actions.backup import take_backup
from actions.db import database_name
from actions.errors import ActionError
from actions.rehearsal import leftover_scratch_databases, rehearse, scratch_databases, scratch_prefix
from tests.conftest import ROOT
from tests.engine_helpers import make_migrations

ENV = "prod"
ROWS = 30_000
PRISMA_TABLE = """
CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
    migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)
"""
INIT = ('CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT, "age" INTEGER, "nickname" TEXT);\n'
        'CREATE INDEX "users_age_idx" ON "users" ("age");\n')
AUDIT = 'CREATE TABLE "audit" ("id" SERIAL PRIMARY KEY, "note" TEXT);\n'
PENDING = {
    "20240201000000_add_bio": 'ALTER TABLE "users" ADD COLUMN "bio" TEXT;\n',
    "20240202000000_email_required": '-- every user has an email by now\nALTER TABLE "users" ALTER COLUMN "email" '
                                     'SET NOT NULL;\n',
    "20240203000000_age_bigint": 'ALTER TABLE "users" ALTER COLUMN "age" SET DATA TYPE BIGINT;\n',
    "20240204000000_email_index": 'CREATE INDEX CONCURRENTLY "users_email_idx" ON "users"("email");\n',
    "20240205000000_hold": 'LOCK TABLE "users" IN SHARE MODE;\nSELECT pg_sleep(1.2);\n',
}


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def _execute(url: str, *sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _record_applied(url: str, name: str, sql: str) -> None:
    await _execute(url, "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, "
                        f"applied_steps_count) VALUES ('{name[:30]}', '{_checksum(sql)}', clock_timestamp(), "
                        f"'{name}', 1)")


async def _seed(url: str) -> None:
    await _execute(url, PRISMA_TABLE, INIT,
                   f"INSERT INTO users (email, age, nickname) SELECT 'u' || g || '@example.com', g % 90, "
                   f"CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END FROM generate_series(1, {ROWS}) g")
    await _record_applied(url, "20240101000000_init", INIT)


async def _fingerprint(url: str) -> dict[str, Any]:
    """Everything a rehearsal must not change on the live database: rows, migrations table, catalog, files."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return {
            "migrations": [dict(r) for r in await conn.fetch("SELECT * FROM _prisma_migrations ORDER BY id")],
            "data": await conn.fetchval("SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u"),
            "columns": [tuple(r) for r in await conn.fetch(
                "SELECT attrelid::regclass::text, attname, atttypid::regtype::text, attnotnull FROM pg_attribute "
                "WHERE attrelid IN ('users'::regclass, '_prisma_migrations'::regclass) AND attnum > 0 "
                "AND NOT attisdropped ORDER BY 1, attnum")],
            "relations": [tuple(r) for r in await conn.fetch(
                "SELECT relname, relkind::text, relfilenode::int8 FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace ORDER BY relname")],
            "reloptions": await conn.fetchval("SELECT reloptions::text FROM pg_class WHERE oid = 'users'::regclass"),
        }
    finally:
        await conn.close()


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """A seeded live database, a verified backup of it, and the migrations folder with five pending files."""
    asyncio.run(_seed(database_url))
    info = asyncio.run(take_backup(database_url, tmp_path / "backups", ENV, reason="test", requested_by="t"))
    folder = make_migrations(tmp_path / "migrations", {"20240101000000_init": INIT, **PENDING})
    return {"url": database_url, "backup_dir": tmp_path / "backups", "migrations": folder, "backup": info}


def _by_name(result: Any) -> dict[str, Any]:
    return {m.name: m for m in result.migrations}


async def test_rehearsal_measures_locks_rewrites_and_scans_and_leaves_prod_untouched(live: dict[str, Any]) -> None:
    url = live["url"]
    # applied to the live database after the backup was taken: the copy catches up first
    folder = make_migrations(live["migrations"], {"20240115000000_audit": AUDIT})
    await _execute(url, AUDIT)
    await _record_applied(url, "20240115000000_audit", AUDIT)
    before = await _fingerprint(url)
    steps: list[str] = []

    result = await rehearse(url, folder, live["backup_dir"], ENV, on_step=lambda s: steps.append(s.name))

    assert result.ok and result.failed is None
    assert result.caught_up == ["20240115000000_audit"]
    assert result.pending == list(PENDING) and [m.status for m in result.migrations] == ["applied"] * 5
    assert result.backup_id == live["backup"].id
    assert result.restore_seconds is not None and result.restored_bytes and result.restored_bytes > 1_000_000
    tested = f"restore tested on {result.started_at:%Y-%m-%d}: "
    assert result.restore_tested and result.restore_tested.startswith(tested)
    assert result.checksums["20240203000000_age_bigint"] == _checksum(PENDING["20240203000000_age_bigint"])
    m = _by_name(result)

    add = m["20240201000000_add_bio"].statements[0]
    assert [(lk.relation, lk.mode, lk.how) for lk in add.locks] == [("users", "ACCESS EXCLUSIVE", "exact")]
    assert add.rewritten == [] and add.scanned == [] and add.rows_read == 0 and add.rows_written == 0
    assert m["20240201000000_add_bio"].verdict == "safe while the app runs"

    not_null = m["20240202000000_email_required"].statements[0]
    assert not_null.line == 2  # after the comment line
    assert not_null.main_lock is not None and not_null.main_lock.mode == "ACCESS EXCLUSIVE"
    assert not_null.scanned == ["users"] and not_null.rewritten == [] and not_null.rows_read == ROWS

    bigint = m["20240203000000_age_bigint"].statements[0]
    assert bigint.main_lock is not None and bigint.main_lock.mode == "ACCESS EXCLUSIVE"
    assert bigint.rewritten == ["users"]
    assert {"users_age_idx", "users_pkey"} <= set(bigint.index_builds)  # a rewrite rebuilds the indexes
    assert bigint.rows == ROWS  # the table's rows, though the index builds read them again

    concurrent = m["20240204000000_email_index"]
    assert not concurrent.transactional and concurrent.verdict == "safe while the app runs"
    index = concurrent.statements[0]
    assert index.how == "outside a transaction" and index.rewritten == []
    users_locks = [lk for lk in index.locks if lk.relation == "users"]
    assert [lk.mode for lk in users_locks] == ["SHARE UPDATE EXCLUSIVE"] and users_locks[0].how in ("sampled",
                                                                                                    "documented")
    assert index.index_builds == ["users_email_idx"] and index.scanned == ["users"]
    assert index.rows_read is not None and index.rows_read >= ROWS and index.rows == ROWS

    hold = m["20240205000000_hold"]
    share = hold.statements[0].locks[0]
    assert (share.relation, share.mode) == ("users", "SHARE")
    assert 1.2 <= share.held_for <= 1.5, share.held_for  # from the LOCK to the COMMIT, the pg_sleep(1.2) included
    assert hold.verdict.startswith("blocks writes to `users` for ~1.")

    # nothing on the live database changed, and the copy is gone
    assert await _fingerprint(url) == before
    assert result.dropped and await scratch_databases(url) == []
    assert steps[:2] == ["read the live database", "read the live database"]  # started, then done
    assert "drop the copy" in steps
    json.dumps(result.to_dict())  # the Slack side and --json get plain data


async def test_a_failing_migration_is_reported_and_prod_is_not_touched(live: dict[str, Any], pg_server: Any) -> None:
    url = live["url"]
    folder = make_migrations(live["migrations"], {
        "20240202000000_email_required": 'ALTER TABLE "users" ADD COLUMN "x" INT;\n\n'
                                         'ALTER TABLE "users" ALTER COLUMN "nickname" SET NOT NULL;\n'})
    before = await _fingerprint(url)
    # the copy goes on another URL of the server (rehearsal_url), named after the live database
    result = await rehearse(url, folder, live["backup_dir"], ENV, rehearsal_url=pg_server.url_for("postgres"))

    assert not result.ok
    failed = result.failed
    assert failed is not None and failed.name == "20240202000000_email_required"
    assert failed.verdict == ('failed: column "nickname" of relation "users" contains null values '
                              "(statement 2, line 3)")
    assert "Failed at statement 2 of 2 (line 3)" in (failed.error or "")
    # the statement before it was rolled back with it: no lock is left held, the later ones did not run
    assert [m.status for m in result.migrations] == ["applied", "failed", "not run", "not run", "not run"]
    assert result.migrations[2].verdict == "not rehearsed: an earlier migration failed"
    assert result.scratch_database.startswith(scratch_prefix(database_name(url)))
    assert await _fingerprint(url) == before
    assert await scratch_databases(pg_server.url_for("postgres"), database_name(url)) == []


async def test_refuses_without_room_for_the_copy_and_restores_nothing(live: dict[str, Any]) -> None:
    with pytest.raises(ActionError, match=r"only 1000 B free .* the copy needs about .*nothing was restored") as info:
        await rehearse(live["url"], live["migrations"], live["backup_dir"], ENV, free_bytes=lambda: 1000)
    assert info.value.code == "disk_space"
    assert await scratch_databases(live["url"]) == []


# --- a kill -9 in the middle ---------------------------------------------------------------------------


def _rehearsal_process(tmp_path: Path, url: str, folder: Path, backup_dir: Path) -> subprocess.Popen[str]:
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.{ENV}]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n'
                      f'backup_dir = "{backup_dir}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL")}
    return subprocess.Popen([sys.executable, "-m", "bot", "rehearse", ENV, "--config", str(config)], cwd=ROOT,
                            env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


async def _sleeping_on_a_copy(url: str, prefix: str) -> str | None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT datname FROM pg_stat_activity WHERE starts_with(datname, $1) AND query LIKE 'SELECT pg_sleep%'",
            prefix)
    finally:
        await conn.close()


async def test_a_copy_left_by_a_killed_rehearsal_is_dropped_by_the_next_one(live: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    url = live["url"]
    folder = make_migrations(tmp_path / "slow", {"20240101000000_init": INIT,
                                                 "20240301000000_slow": "SELECT pg_sleep(60);\n"})
    proc = _rehearsal_process(tmp_path, url, folder, live["backup_dir"])
    try:
        deadline = time.monotonic() + 60
        while (copy := await _sleeping_on_a_copy(url, scratch_prefix(database_name(url)))) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the rehearsal never reached its migration"
            await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [s.name for s in await scratch_databases(url)] == [copy]
    deadline = time.monotonic() + 10  # the server notices the dead client's sessions and ends them
    while not (leftovers := await leftover_scratch_databases(url)):
        assert time.monotonic() < deadline, "the killed rehearsal's copy still looks in use"
        await asyncio.sleep(0.1)
    assert [s.name for s in leftovers] == [copy]

    (folder / "20240301000000_slow" / "migration.sql").write_text("SELECT 1;\n")
    await asyncio.sleep(1.1)  # the next copy's name has the next second's timestamp
    result = await rehearse(url, folder, live["backup_dir"], ENV)
    assert result.ok and result.leftovers_dropped == [copy]
    assert await scratch_databases(url) == []


def test_cli_prints_the_verdicts_and_exits_1_when_a_migration_fails(live: dict[str, Any], tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "cli", {"20240101000000_init": INIT,
                                                "20240201000000_add_bio": PENDING["20240201000000_add_bio"],
                                                "20240202000000_bad": 'ALTER TABLE "users" ALTER COLUMN "nickname" '
                                                                      "SET NOT NULL;\n"})
    proc = _rehearsal_process(tmp_path, live["url"], folder, live["backup_dir"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "20240201000000_add_bio: safe while the app runs" in out
    assert '20240202000000_bad: failed: column "nickname" of relation "users" contains null values' in out
    assert "ACCESS EXCLUSIVE on users" in out and "restore tested on" in out
    assert "restore done" in err  # progress on stderr
    asyncio.run(_assert_no_copies(live["url"]))


async def _assert_no_copies(url: str) -> None:
    assert await scratch_databases(url) == []


# --- impact, before any rehearsal ---------------------------------------------------------------------------


async def test_impact_reads_size_write_rate_and_the_transactions_in_the_way(live: dict[str, Any]) -> None:
    from actions.impact import impact_of_pending

    url = live["url"]
    await _execute(url, "ANALYZE users")
    before = await _fingerprint(url)
    writer = await asyncpg.connect(url, timeout=10)
    old_reader = await asyncpg.connect(url, timeout=10)
    young_reader = await asyncpg.connect(url, timeout=10)
    stop = asyncio.Event()

    async def write() -> None:  # an application writing while the plan is made
        i = 0
        while not stop.is_set():
            i += 1
            await writer.execute("UPDATE users SET nickname = 'w' WHERE id = $1", i % ROWS + 1)
            await writer.execute("SELECT pg_stat_force_next_flush()")  # publish the counts now, not in a second
            await asyncio.sleep(0.01)

    task = asyncio.create_task(write())
    try:
        await old_reader.execute("BEGIN; SELECT count(*) FROM users")  # ACCESS SHARE, open for a while
        await asyncio.sleep(1.6)
        # younger than lock_timeout when the plan looks (after the 1 s of write rate): not listed
        await young_reader.execute("BEGIN; SELECT count(*) FROM users")
        report = await impact_of_pending(url, live["migrations"], lock_timeout=1.5, write_rate_interval=1.0)
    finally:
        stop.set()
        await task
        for conn in (old_reader, young_reader):
            await conn.execute("ROLLBACK")
        for conn in (writer, old_reader, young_reader):
            await conn.close()

    assert [m.name for m in report.migrations] == list(PENDING)
    locks = {m.name: m.statements[0].locks for m in report.migrations}
    add = locks["20240201000000_add_bio"][0]
    assert (add.relation, add.mode, add.effect, add.blocks) == ("users", "ACCESS EXCLUSIVE", "brief",
                                                                "reads and writes")
    assert add.exists and add.rows_estimate is not None and abs(add.rows_estimate - ROWS) < ROWS * 0.05
    assert add.size_bytes is not None and add.size_bytes > 1_000_000
    assert add.writes_per_second is not None and add.writes_per_second > 5
    assert [h.pid for h in add.waits_for] == [old_reader.get_server_pid()]
    assert add.waits_for[0].mode == "AccessShareLock" and "SELECT count(*) FROM users" in add.waits_for[0].query
    # SHARE UPDATE EXCLUSIVE does not wait for readers (nor for the writer's ROW EXCLUSIVE)
    index = locks["20240204000000_email_index"][0]
    assert (index.mode, index.effect, index.waits_for) == ("SHARE UPDATE EXCLUSIVE", "index build", [])
    assert locks["20240203000000_age_bigint"][0].effect == "rewrite"
    assert locks["20240202000000_email_required"][0].effect == "scan"
    json.dumps(report.to_dict())
    after = await _fingerprint(url)
    assert after["migrations"] == before["migrations"] and after["columns"] == before["columns"]


async def test_impact_marks_relations_created_in_the_same_batch(database_url: str) -> None:
    from actions.impact import impact

    report = await impact(database_url, [("a", 'CREATE TABLE "Tag" ("id" INT);'),
                                         ("b", 'CREATE INDEX "Tag_id" ON "Tag"("id");\nALTER TABLE "Gone" DROP '
                                               'COLUMN "x";')], write_rate_interval=0)
    create, index = report.migrations[0].statements[0].locks[0], report.migrations[1].statements[0].locks[0]
    assert (create.relation, create.effect, create.new) == ('"Tag"', "new", False)
    assert (index.relation, index.mode, index.new, index.exists) == ('"Tag"', "SHARE", True, False)
    missing = report.migrations[1].statements[1].locks[0]
    assert (missing.relation, missing.exists, missing.new) == ('"Gone"', False, False)
    assert "not in the database" in missing.describe()
