"""Who is in the way: the sessions blocking a migration, or holding the migration advisory lock.

    >>> blockers = await blocking_sessions(conn, [4242])                 # doctest: +SKIP
    >>> blockers[0].describe()                                            # doctest: +SKIP
    'pid 4242 (psql, user app, idle in transaction since 2024-05-01 10:00:00+00:00): LOCK TABLE t ...'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from actions.db import connect
from bot.redact import redact

log = logging.getLogger(__name__)
QUERY_CHARS = 300


@dataclass(frozen=True)
class Blocker:
    """A session in the way; ``query`` is trimmed and redacted."""

    pid: int
    usename: str | None
    application_name: str | None
    state: str | None
    query: str | None
    since: datetime | None  # start of its transaction (or query, or connection)
    wait_event: str | None = None

    def describe(self) -> str:
        app = self.application_name or "no application_name"
        since = f" since {self.since:%Y-%m-%d %H:%M:%S%z}" if self.since else ""
        query = f": {self.query}" if self.query else ""
        return f"pid {self.pid} ({app}, user {self.usename}, {self.state or 'unknown state'}{since}){query}"

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "usename": self.usename, "application_name": self.application_name,
                "state": self.state, "query": self.query,
                "since": self.since.isoformat() if self.since else None, "wait_event": self.wait_event}


def _trim(query: str | None) -> str | None:
    if query is None:
        return None
    one_line = " ".join(query.split())
    if len(one_line) > QUERY_CHARS:
        one_line = one_line[: QUERY_CHARS - 1] + "…"
    return redact(one_line)


_ACTIVITY = """
SELECT pid, usename, application_name, state, query,
       coalesce(xact_start, query_start, backend_start) AS since,
       CASE WHEN wait_event IS NULL THEN NULL ELSE wait_event_type || ':' || wait_event END AS wait_event
FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY since NULLS LAST, pid
"""


async def sessions(conn: asyncpg.Connection, pids: list[int]) -> list[Blocker]:
    """Details of the sessions ``pids`` (those that still exist)."""
    if not pids:
        return []
    rows = await conn.fetch(_ACTIVITY, pids)
    return [Blocker(r["pid"], r["usename"], r["application_name"], r["state"], _trim(r["query"]), r["since"],
                    r["wait_event"]) for r in rows]


async def blocking_sessions(conn: asyncpg.Connection, waiting_pid: int) -> list[Blocker]:
    """The sessions that ``waiting_pid`` is waiting for right now (pg_blocking_pids)."""
    pids = await conn.fetchval("SELECT pg_blocking_pids($1)", waiting_pid)
    return await sessions(conn, list(pids or []))


_RELATION_LOCK_HOLDERS = """
SELECT DISTINCT l.pid FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
WHERE l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND c.relnamespace <> 'pg_catalog'::regnamespace
  AND l.pid <> ALL($1::int[])
"""


async def relation_lock_holders(conn: asyncpg.Connection, exclude: list[int]) -> list[Blocker]:
    """Fallback when the wait was not observed: sessions holding locks on this database's tables."""
    pids = [r["pid"] for r in await conn.fetch(_RELATION_LOCK_HOLDERS, [*exclude, 0])]
    return await sessions(conn, pids)


class BlockerWatch:
    """Watches a session while it runs a migration, remembering who blocks it.

    Uses its own connection, opened on first need and kept for the whole deploy::

        watch = BlockerWatch(url, timeout=5)
        async with watch.watching(pid):
            await conn.execute(sql)       # if it waits on a lock, watch.last holds the blockers
        await watch.close()
    """

    def __init__(self, url: str, *, timeout: float = 5.0, interval: float = 0.1) -> None:
        self.url = url
        self.timeout = timeout
        self.interval = interval
        self.last: list[Blocker] = []
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.url, timeout=self.timeout, application_name="migrabot-watch")
        return self._conn

    async def _poll(self, pid: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.interval)
            try:
                conn = await self._connection()
                found = await asyncio.wait_for(blocking_sessions(conn, pid), timeout=self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # watching is best effort: never break the migration
                log.debug("blocker watch failed: %s", exc)
                return
            if found:
                self.last = found

    @contextlib.asynccontextmanager
    async def watching(self, pid: int):  # type: ignore[no-untyped-def]
        self.last = []
        stop = asyncio.Event()
        task = asyncio.create_task(self._poll(pid, stop))
        try:
            yield self
        finally:
            stop.set()
            task.cancel()
            # On 3.11 wait_for can swallow a cancellation that lands as its inner call finishes
            # (python/cpython#86296, fixed in 3.12): the poll would go on and awaiting it would
            # hang the migration's end. The flag ends the loop then; the wait is bounded anyway.
            await asyncio.wait({task}, timeout=self.timeout + self.interval + 1)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as never retrieved

    async def fallback(self, exclude: list[int]) -> list[Blocker]:
        """Lock holders on this database's tables, other than ``exclude`` and the watch itself."""
        try:
            conn = await self._connection()
            own = conn.get_server_pid()
            return await asyncio.wait_for(relation_lock_holders(conn, [*exclude, own]), timeout=self.timeout)
        except Exception as exc:
            log.debug("blocker fallback failed: %s", exc)
            return []

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            try:
                await asyncio.wait_for(self._conn.close(), timeout=5)
            except Exception:
                self._conn.terminate()
        self._conn = None
