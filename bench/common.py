"""What several benchmarks share: one-off SQL, running a tool, the machine's CPU, percentiles.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50), percentile([1.0, 2.0], 99)
    (3.0, 2.0)
"""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import asyncpg

from actions.db import quote_ident, with_database


async def connect_admin(admin: str) -> asyncpg.Connection:
    """A connection to the admin database; waits out a moment of "too many clients" (a shared server)."""
    for _ in range(50):
        try:
            return await asyncpg.connect(admin, timeout=10)
        except asyncpg.TooManyConnectionsError:
            await asyncio.sleep(0.2)
    return await asyncpg.connect(admin, timeout=10)


async def fresh_db(admin: str, name: str) -> str:
    """An empty database ``name`` (dropped first if a crashed run left it); its URL."""
    conn = await connect_admin(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()
    return with_database(admin, name)


async def drop_db(admin: str, name: str) -> None:
    """Drop ``name`` if it exists, sessions and all."""
    conn = await connect_admin(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def admin_exec(url: str, *sql: str) -> None:
    """Run each of ``sql`` on a connection of its own to ``url`` (CREATE/DROP DATABASE and the like)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str) -> object:
    """The first value of ``sql``'s first row."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def run_tool(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a command (pgbench, pg_restore, psql…) to its end; its stderr's tail in the error if it fails."""
    proc = await asyncio.create_subprocess_exec(*(str(a) for a in args), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {err.decode()[-500:]}")


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it (the machine line of every results file)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values``, nearest rank (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]
