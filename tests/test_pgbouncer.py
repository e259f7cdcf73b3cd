"""pgBouncer's admin console through a real pgBouncer: SHOW POOLS, PAUSE/RESUME, auth, down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest

from actions.errors import ActionError
from actions.pgbouncer import admin_command, admin_query, pool_health

if TYPE_CHECKING:
    from tests.pgbouncer_fixture import PgBouncer

pytest_plugins = ["tests.pgbouncer_fixture"]


async def test_show_pools_lists_the_pool_a_client_opened(running_pgbouncer: PgBouncer, database: str) -> None:
    conn = await asyncpg.connect(running_pgbouncer.url_for(database), statement_cache_size=0, timeout=5)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        rows = await admin_query(running_pgbouncer.admin_url, "SHOW POOLS")
    finally:
        await conn.close()
    pool = next(r for r in rows if r["database"] == database)
    assert pool["user"] == "postgres"
    assert pool["pool_mode"] == "transaction"
    assert int(pool["cl_active"]) >= 1


async def test_pause_holds_new_queries_until_resume(running_pgbouncer: PgBouncer, database: str) -> None:
    url, admin = running_pgbouncer.url_for(database), running_pgbouncer.admin_url
    conn = await asyncpg.connect(url, statement_cache_size=0, timeout=5)
    try:
        await admin_command(admin, f"PAUSE {database}")
        try:
            # a paused database makes clients wait instead of reaching PostgreSQL
            query = asyncio.ensure_future(conn.fetchval("SELECT 42"))
            done, _ = await asyncio.wait({query}, timeout=0.5)
            assert not done, "the query ran although the database was paused"
            assert (await pool_health(admin, database)).verdict == "ok"  # a short wait is normal
            health = await pool_health(admin, database, wait_warn=0)
            assert health.verdict == "warn" and "waiting" in health.reason
        finally:
            await admin_command(admin, f"RESUME {database}")
        assert await asyncio.wait_for(query, timeout=5) == 42
    finally:
        await conn.close()


async def test_pool_health_ok_for_an_idle_pool(running_pgbouncer: PgBouncer, database: str) -> None:
    conn = await asyncpg.connect(running_pgbouncer.url_for(database), statement_cache_size=0, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
        health = await pool_health(running_pgbouncer.admin_url, database)
    finally:
        await conn.close()
    assert health.verdict == "ok"
    assert [p.database for p in health.pools] == [database]
    assert health.to_dict()["pools"][0]["cl_waiting"] == 0


async def test_unknown_console_command_is_a_clear_error(running_pgbouncer: PgBouncer) -> None:
    with pytest.raises(ActionError, match="SHOW HELP"):
        await admin_query(running_pgbouncer.admin_url, "SHOW NONSENSE")


async def test_pgbouncer_down_is_a_fail_verdict_with_the_reason(running_pgbouncer: PgBouncer) -> None:
    running_pgbouncer.stop()
    try:
        health = await pool_health(running_pgbouncer.admin_url)
        assert health.verdict == "fail"
        assert "refused" in health.reason and str(running_pgbouncer.port) in health.reason
        with pytest.raises(ActionError, match="is pgBouncer running"):
            await admin_command(running_pgbouncer.admin_url, "RELOAD")
    finally:
        running_pgbouncer.start()


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
def test_password_authentication(pgbouncer_factory: Callable[..., PgBouncer], auth_type: str) -> None:
    bouncer = pgbouncer_factory(auth_type=auth_type, users={"postgres": "s3cret-pw"})
    rows = asyncio.run(admin_query(bouncer.admin_url, "SHOW VERSION"))
    assert "PgBouncer" in next(iter(rows[0].values()))
    wrong = bouncer.admin_url.replace("s3cret-pw", "wrong-pw")
    with pytest.raises(ActionError) as caught:
        asyncio.run(admin_query(wrong, "SHOW POOLS"))
    message = str(caught.value)
    assert "authentication failed" in message and "admin_users" in message
    assert "wrong-pw" not in message
    no_password = bouncer.admin_url.replace(":s3cret-pw", "")
    with pytest.raises(ActionError, match="has none"):
        asyncio.run(admin_query(no_password, "SHOW POOLS"))


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ActionError, match=r"did not answer within 0\.3s"):
            await admin_query(f"postgresql://postgres@127.0.0.1:{port}/pgbouncer", "SHOW POOLS", timeout=0.3)
    finally:
        server.close()
