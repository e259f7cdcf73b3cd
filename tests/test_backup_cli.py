"""``migrabot backup`` / ``backups`` / ``restore`` as an operator uses them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from bot.cli import main


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "migrabot.toml"
    path.write_text(f'[environments.staging]\ndatabase_url = "{database_url}"\nbackup_dir = "backups"\n'
                    "[environments.staging.retention]\nkeep_last = 1\n")
    return path


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval("SELECT count(*) FROM t")
    finally:
        await conn.close()


async def test_backup_list_restore_from_the_command_line(config: Path, database_url: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    await conn.execute("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 10)")
    await conn.close()
    # main() runs its own event loop: call it from a worker thread
    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, "--config", str(config)])

    assert await cli("backup", "staging", "--reason", "test") == 0
    out, err = capsys.readouterr()
    assert "verified" in out and "done:" in err
    assert await cli("backup", "staging", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["verified"] and second["reason"] == "manual backup"

    assert await cli("backups", "staging", "--json", "--prune") == 0
    listing = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in listing["backups"]] == [second["id"]] and len(listing["pruned"]) == 1

    conn = await asyncpg.connect(database_url, timeout=10)
    await conn.execute("DELETE FROM t")
    await conn.close()
    assert await cli("restore", "staging", second["id"], "--confirm", "restore") == 2
    assert "type RESTORE exactly" in capsys.readouterr().err
    assert await cli("restore", "staging", "20000101_000000", "--confirm", "RESTORE") == 2
    assert "no backup" in capsys.readouterr().err
    assert await _count(database_url) == 0

    assert await cli("restore", "staging", second["id"], "--confirm", "RESTORE") == 0
    out, err = capsys.readouterr()
    assert "swap done" in err and "previous database kept as" in out
    assert await _count(database_url) == 10

    assert await cli("backups", "staging") == 0
    table = capsys.readouterr().out
    assert "pre-restore" in table and "LAST MIGRATION" in table
    assert await cli("restore", "staging", "--drop-previous", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["dropped"]) == 1
