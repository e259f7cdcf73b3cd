"""Shared fixtures: a real PostgreSQL database per test, and paths to shared material."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from state.store import open_store
from tests import pgserver

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_report_header(config: pytest.Config) -> str:
    return "migrabot tests: PostgreSQL server chosen on first use (see 'pg server' line)"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    server = pgserver.find_server()
    print(f"\npg server: {server.kind} ({server.admin_url.split('@')[-1]})")
    if server.bin_dir:
        # pg_dump/psql of the embedded server, for tests on a machine without them
        os.environ["PATH"] = f"{server.bin_dir}{os.pathsep}{os.environ['PATH']}"
    yield server


@pytest.fixture(scope="session")
def server_major(pg_server: pgserver.Server) -> int:
    """The test server's major version (15 for the local one, newer for the embedded one)."""
    async def ask() -> int:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            return conn.get_server_version().major
        finally:
            await conn.close()

    return asyncio.run(ask())


@pytest.fixture
def database(pg_server: pgserver.Server) -> Iterator[str]:
    """Name of a fresh, empty database, dropped (with every copy named after it) afterwards."""
    name = asyncio.run(pgserver.create_database(pg_server))
    yield name
    asyncio.run(pgserver.drop_databases_like(pg_server, name))


@pytest.fixture
def database_url(pg_server: pgserver.Server, database: str) -> str:
    """URL of a fresh, empty database on the test server."""
    return pg_server.url_for(database)


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (a user's clone has no ../shared); this test needs it")
    return path


@pytest.fixture
def umami_migrations() -> Path:
    """The real Prisma migrations folder of Umami (19 migrations)."""
    return shared_path("corpus", "umami", "migrations")


@pytest.fixture
def umami_deployable(umami_migrations: Path, pg_server: pgserver.Server) -> Path:
    """The umami folder, for tests that apply it: its first migration creates pgcrypto."""
    folder = umami_migrations

    async def has_pgcrypto() -> bool:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'"))
        finally:
            await conn.close()

    if not asyncio.run(has_pgcrypto()):
        pytest.skip(f"the {pg_server.kind} PostgreSQL server has no pgcrypto extension, which umami's first "
                    "migration creates")
    return folder


@pytest.fixture
def prod_database(pg_server: pgserver.Server, database: str) -> str:
    """A second fresh database for "prod", named after the first so the same cleanup drops it."""
    name = f"{database}_prod"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return name


@pytest.fixture
def make_stack(tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str) -> Any:
    """A factory for the whole bot over real HTTP (tests/botstack.py) on staging and prod databases.

    ``make_stack(migrations=None, files=None, staging_url=None, **prod_config)``: ``migrations``
    maps folder names to SQL (default: botstack.MIGRATIONS), ``files`` adds files by relative
    path (a ``down.sql``), ``prod_config`` adds keys to prod's configuration table.
    """
    from tests.botstack import bot_stack, make_config, write_migrations

    def factory(migrations: dict[str, str] | None = None, *, files: dict[str, str] | None = None,
                staging_url: str | None = None, **prod_extra: Any) -> Any:
        folder = write_migrations(tmp_path / "migrations", migrations)
        for relative, text in (files or {}).items():
            (folder / relative).write_text(text)
        config = make_config(tmp_path, staging_url or pg_server.url_for(database),
                             pg_server.url_for(prod_database), **prod_extra)
        return bot_stack(config)

    return factory


STATE_DB_PREFIX = "mbstate"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a state store lives, once per backend: a SQLite file, or a throwaway PostgreSQL database.

    The database is named ``mbstate_…`` and dropped afterwards; ones left by a killed run are dropped
    when they are more than an hour old (tests running beside this one keep theirs).
    """
    if request.param == "sqlite":
        yield str(tmp_path / "state.sqlite3")
        return
    yield from _state_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def pg_state_url(pg_server: pgserver.Server) -> Iterator[str]:
    """A throwaway PostgreSQL database for a state store (for the tests about PostgreSQL state only)."""
    yield from _state_database(pg_server)


def _state_database(server: pgserver.Server) -> Iterator[str]:
    asyncio.run(_drop_old_state_databases(server))
    name = asyncio.run(pgserver.create_database(server, prefix=STATE_DB_PREFIX))
    try:
        yield server.url_for(name)
    finally:
        asyncio.run(pgserver.drop_databases_like(server, name))


async def _drop_old_state_databases(server: pgserver.Server) -> None:
    conn = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        # a database's age is its directory's: PG_VERSION is written once, when it is created
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1"
            " AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - interval '1 hour'",
            STATE_DB_PREFIX + r"\_%")
    except asyncpg.InsufficientPrivilegeError:
        names = []  # not a superuser: leftovers stay (their names say whose they are)
    finally:
        await conn.close()
    for row in names:
        await pgserver.drop_database(server, row["datname"])


@pytest.fixture
def store(state_target: str) -> Iterator[Any]:
    """An opened state store on each backend (``state.store.open_store``), closed afterwards."""
    opened = open_store(state_target)
    try:
        yield opened
    finally:
        opened.close()
