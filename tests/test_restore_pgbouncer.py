"""A restore behind pgBouncer: the pool is paused for the swap, and the app's pooled connection
reaches the restored database afterwards without reconnecting."""

from __future__ import annotations

import asyncpg
import pytest

from actions.backup import list_backups, take_backup
from actions.errors import ActionError
from actions.pgbouncer import admin_query
from actions.restore import restore
from tests.pgbouncer_fixture import PgBouncer

pytest_plugins = ["tests.pgbouncer_fixture"]


async def test_swap_pauses_and_resumes_pgbouncer(running_pgbouncer: PgBouncer, database: str, database_url: str,
                                                 tmp_path) -> None:
    direct = await asyncpg.connect(database_url, timeout=10)
    await direct.execute("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 10)")
    await direct.close()
    info = await take_backup(database_url, tmp_path, "prod", reason="x", requested_by="t")
    app = await asyncpg.connect(running_pgbouncer.url_for(database), statement_cache_size=0, timeout=5)
    try:
        await app.execute("DELETE FROM t")
        commands: list[str] = []

        async def on_step(step) -> None:
            if step.name == "swap" and step.status == "done":
                rows = await admin_query(running_pgbouncer.admin_url, "SHOW DATABASES")
                commands.append(next(r.get("paused") for r in rows if r.get("name") == database) or "?")

        result = await restore(database_url, tmp_path, "prod", info.id, confirm="RESTORE", snapshot=False,
                               pgbouncer_admin_url=running_pgbouncer.admin_url, on_step=on_step)
        assert result.previous_database
        assert commands == ["0"]  # resumed when the swap was done
        # the pooled client keeps its pgBouncer session; pgBouncer reconnects to the restored database
        for _ in range(3):
            try:
                assert await app.fetchval("SELECT count(*) FROM t", timeout=5) == 10
                break
            except asyncpg.PostgresError:  # the first query may meet the server connection we ended
                continue
        else:
            raise AssertionError("the pooled client never reached the restored database")
    finally:
        app.terminate()


async def test_unreachable_pgbouncer_leaves_the_database_alone(database_url: str, tmp_path) -> None:
    direct = await asyncpg.connect(database_url, timeout=10)
    await direct.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
    await direct.close()
    info = await take_backup(database_url, tmp_path, "prod", reason="x", requested_by="t")
    with pytest.raises(ActionError, match=r"connection refused.*nothing was changed"):
        await restore(database_url, tmp_path, "prod", info.id, confirm="RESTORE",
                      pgbouncer_admin_url="postgresql://postgres@127.0.0.1:1/pgbouncer")
    assert [b.id for b in list_backups(tmp_path, "prod")] == [info.id]  # not even a snapshot
    direct = await asyncpg.connect(database_url, timeout=10)
    try:
        assert await direct.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await direct.close()
