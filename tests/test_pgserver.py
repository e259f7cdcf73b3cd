import asyncio

import asyncpg

from tests import pgserver


def test_each_test_gets_a_fresh_empty_database_that_is_dropped(pg_server, database_url, database):
    async def check():
        conn = await asyncpg.connect(database_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            await conn.execute("CREATE TABLE t (id int)")
        finally:
            await conn.close()
        return tables

    assert asyncio.run(check()) == 0


def test_drop_databases_like_removes_copies(pg_server):
    name = asyncio.run(pgserver.create_database(pg_server, prefix="mbdrop"))

    async def run():
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}__copy"')
        finally:
            await conn.close()
        await pgserver.drop_databases_like(pg_server, name)
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname LIKE $1", name + "%")
        finally:
            await conn.close()

    assert asyncio.run(run()) == 0
