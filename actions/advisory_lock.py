"""Prisma's migration advisory lock (key 72707369), taken with a bounded wait.

    >>> async with migration_lock(conn, timeout=10, on_wait=print):   # doctest: +SKIP
    ...     ...   # no other migrabot or `prisma migrate deploy` runs on this database meanwhile

Same key and same session-level lock as Prisma, so migrabot and Prisma exclude each other.
After the bound the error names the holder (pid, application, since when).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from actions.blockers import Blocker, sessions
from actions.db import connection
from actions.errors import ActionError

log = logging.getLogger(__name__)
PRISMA_LOCK_KEY = 72707369

_HOLDERS = """
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
"""


async def lock_holders(conn: asyncpg.Connection) -> list[Blocker]:
    """The sessions holding the migration lock on this database (ours excluded)."""
    pids = [r["pid"] for r in await conn.fetch(_HOLDERS, PRISMA_LOCK_KEY)]
    return await sessions(conn, pids)


async def describe_holders(url: str) -> str | None:
    """Who holds the migration lock on the database at ``url``, in words; None when nobody (or unknown)."""
    try:
        async with connection(url) as conn:
            holders = await lock_holders(conn)
    except ActionError:
        return None
    return ", ".join(h.describe() for h in holders) or None


async def acquire(conn: asyncpg.Connection, *, timeout: float,
                  on_wait: Callable[[list[Blocker]], Awaitable[Any] | Any] | None = None) -> None:
    """Take the lock, polling until ``timeout`` seconds; raise ActionError naming the holder."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    warned = False
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRISMA_LOCK_KEY):
            return
        if not warned and on_wait is not None:
            warned = True
            holders = await lock_holders(conn)
            try:
                result = on_wait(holders)
                if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("the waiting_for_lock callback failed (ignored)")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            holders = await lock_holders(conn)
            who = "; ".join(h.describe() for h in holders) or "a session that has since ended"
            raise ActionError(
                f"another migration run holds the migration lock (advisory lock {PRISMA_LOCK_KEY}) and did not "
                f"release it within {timeout:g}s: {who}. Wait for it to finish, or if that session is stuck, "
                "end it with SELECT pg_terminate_backend(PID) and try again", code="advisory_lock")
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 1.5, 0.5)


async def release(conn: asyncpg.Connection) -> None:
    """Release the lock; if that fails the connection is closed by the caller, which releases it too."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.execute(f"SELECT pg_advisory_unlock({PRISMA_LOCK_KEY})"), timeout=5)
    except Exception as exc:
        log.warning("could not release the migration lock (closing the connection releases it): %s", exc)


@contextlib.asynccontextmanager
async def migration_lock(conn: asyncpg.Connection, *, timeout: float,
                         on_wait: Callable[[list[Blocker]], Any] | None = None) -> AsyncIterator[None]:
    await acquire(conn, timeout=timeout, on_wait=on_wait)
    try:
        yield
    finally:
        await release(conn)
