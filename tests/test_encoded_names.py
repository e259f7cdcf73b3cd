"""Database names that need percent-encoding in a URL (a space, non-ASCII letters) work in every command.

The URL carries ``my%20db`` or ``pr%C3%B8d``; the server knows ``my db`` and ``prød``. deploy,
status, backup, backups, restore (swap and ``--drop-previous``), report and health all run
through the CLI against a real database with such a name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from actions.restore import CONFIRM_WORD
from bot.cli import main
from tests import pgserver
from tests.engine_helpers import make_migrations


@pytest.fixture(params=[" my db", "_prød ø"], ids=["space", "non-ascii"])
def odd_database(request: pytest.FixtureRequest, pg_server: pgserver.Server, database: str) -> str:
    """A database named ``<database> my db`` / ``<database>_prød ø`` (dropped with ``database``)."""
    name = database + request.param

    async def create() -> None:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return name


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_on_a_database_whose_name_needs_encoding(
        odd_database: str, pg_server: pgserver.Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = pg_server.url_for(quote(odd_database, safe=""))
    assert "%" in url
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (2);",
                                              "02_idx": "CREATE INDEX CONCURRENTLY t_x ON t (x);"})
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.odd]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n'
                      'backup_dir = "backups"\n')

    code, out, err = _cli(capsys, config, "deploy", "odd")
    assert code == 0, err
    code, out, err = _cli(capsys, config, "status", "odd", "--json")
    assert code == 0 and json.loads(out)["up_to_date"], err

    code, out, err = _cli(capsys, config, "backup", "odd", "--json")
    assert code == 0, err
    backup = json.loads(out)
    assert backup["database"] == odd_database and backup["verified"]
    assert Path(backup["path"]).parent == tmp_path / "backups" / "odd"
    code, out, err = _cli(capsys, config, "backups", "odd", "--json")
    listed = [b["id"] for b in json.loads(out)["backups"]]
    assert code == 0 and listed[0] == backup["id"] and len(listed) == 2  # and the deploy's own backup

    async def delete_rows() -> None:
        conn = await asyncpg.connect(database=odd_database, dsn=pg_server.admin_url)
        try:
            await conn.execute("DELETE FROM t")
        finally:
            await conn.close()

    asyncio.run(delete_rows())
    code, out, err = _cli(capsys, config, "restore", "odd", "latest", "--confirm", CONFIRM_WORD, "--json")
    assert code == 0, err
    restored = json.loads(out)
    assert restored["database"] == odd_database

    async def count_rows() -> tuple[int, list[str]]:
        conn = await asyncpg.connect(database=odd_database, dsn=pg_server.admin_url)
        try:
            names = [r["datname"] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", odd_database[:20] + "%")]
            return int(await conn.fetchval("SELECT count(*) FROM t")), names
        finally:
            await conn.close()

    rows, names = asyncio.run(count_rows())
    assert rows == 2 and odd_database in names and restored["previous_database"] in names
    code, out, err = _cli(capsys, config, "restore", "odd", "--drop-previous", "--json")
    assert code == 0 and json.loads(out)["dropped"] == [restored["previous_database"]], err

    code, out, err = _cli(capsys, config, "report", "odd", "--json")
    assert code == 0 and json.loads(out)["database"] == odd_database, err
    assert any(t["table"] == "t" for t in json.loads(out)["tables"])
    code, out, err = _cli(capsys, config, "health", "odd", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["database"]["status"] == "pass" and checks["migrations"]["status"] == "pass", checks
    assert checks["backup"]["status"] in ("pass", "warn") and "cannot" not in checks["backup"]["reason"]
