"""Who blocks whom right now (``pg_blocking_pids``), and ending a blocking session.

    chains = await find_blockers("postgresql://app@db/prod")
    for chain in chains:
        print(chain.waiting.pid, "waits for", [b.pid for b in chain.blockers])
    roots = blocking_sessions(chains)            # the sessions at the head of the chains
    await terminate_backend(url, roots[0].pid)   # True when it is gone

The runbook's "Migration Hangs" step (``SELECT pid, usename, state, query FROM
pg_stat_activity``, then ``pg_terminate_backend``) made precise: only sessions that block
another one are listed, with how long their transaction has been open and what they wait
on, and termination is refused for our own session and for other databases.

(``actions/blockers.py``, written alongside the engine, watches one migration's session
while it runs; this module answers "/db blockers" for a whole database.)
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from actions.db import connection
from actions.errors import ActionError
from actions.report import trim_query


@dataclass
class Session:
    """One backend from pg_stat_activity; ages in seconds, ``query`` trimmed and redacted."""

    pid: int
    user: str | None
    application: str | None
    state: str | None
    database: str | None
    xact_age: float | None
    query_age: float | None
    wait_event: str | None  # "Lock:transactionid", or None when not waiting
    query: str

    def describe(self) -> str:
        app = self.application or "no application_name"
        age = f", transaction open {self.xact_age:.0f}s" if self.xact_age is not None else ""
        return f"pid {self.pid} ({app}, user {self.user}, {self.state or 'unknown state'}{age}): {self.query}"


@dataclass
class BlockedChain:
    """A waiting session and the sessions it waits for."""

    waiting: Session
    blockers: list[Session] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"waiting": asdict(self.waiting), "blockers": [asdict(b) for b in self.blockers]}


_ACTIVITY = """
SELECT pid, usename, application_name, state, datname,
       extract(epoch FROM now() - xact_start)::float8 AS xact_age,
       extract(epoch FROM now() - query_start)::float8 AS query_age,
       CASE WHEN wait_event IS NULL THEN NULL ELSE wait_event_type || ':' || wait_event END AS wait_event,
       query, pg_blocking_pids(pid) AS blocked_by
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
"""


def _session(r: Any) -> Session:
    return Session(r["pid"], r["usename"], r["application_name"], r["state"], r["datname"], r["xact_age"],
                   r["query_age"], r["wait_event"], trim_query(r["query"]))


async def find_blockers(url: str, timeout: float = 10) -> list[BlockedChain]:
    """Every session of this database that waits on a lock, with the sessions holding it up.

    Blockers may be in another database (shared catalogs) and are listed all the same.
    Oldest waits first.
    """
    settings = {"statement_timeout": str(int(timeout * 1000))}
    async with connection(url, timeout=timeout, server_settings=settings) as conn:
        rows = await asyncio.wait_for(conn.fetch(_ACTIVITY), timeout=timeout + 1)
        here = await conn.fetchval("SELECT current_database()")
    by_pid = {r["pid"]: r for r in rows}
    chains = []
    for r in rows:
        if r["datname"] != here or not r["blocked_by"]:
            continue
        blockers = [_session(by_pid[p]) for p in r["blocked_by"] if p in by_pid]
        chains.append(BlockedChain(_session(r), blockers))
    chains.sort(key=lambda c: -(c.waiting.query_age or 0))
    return chains


def blocking_sessions(chains: list[BlockedChain]) -> list[Session]:
    """The root blockers: sessions that block others and wait on nobody listed (the ones to look at).

    In a cycle (a deadlock PostgreSQL has not broken yet) every member is returned.
    """
    waiting = {c.waiting.pid for c in chains}
    roots: dict[int, Session] = {}
    for chain in chains:
        for b in chain.blockers:
            if b.pid not in waiting:
                roots.setdefault(b.pid, b)
    if not roots and chains:  # everyone waits on someone: a cycle
        for chain in chains:
            roots.setdefault(chain.waiting.pid, chain.waiting)
    return sorted(roots.values(), key=lambda s: -(s.xact_age or 0))


async def terminate_backend(url: str, pid: int, *, timeout: float = 10) -> bool:
    """``pg_terminate_backend(pid)`` after checking it is another session of this database.

    Returns True once the session is gone (waits up to ``timeout``), False if it is still there.
    """
    async with connection(url, timeout=timeout) as conn:
        if pid == conn.get_server_pid():
            raise ActionError(f"pid {pid} is migrabot's own session: refusing to terminate it")
        row = await conn.fetchrow("SELECT datname, usename FROM pg_stat_activity WHERE pid = $1", pid)
        here = await conn.fetchval("SELECT current_database()")
        if row is None:
            raise ActionError(f"there is no session with pid {pid} (it may have ended already): list the "
                              "blockers again")
        if row["datname"] != here:
            raise ActionError(f"pid {pid} is not a session of database {here} (it is on "
                              f"{row['datname'] or 'no database, a background process'}): refusing to terminate it")
        try:
            if conn.get_server_version().major >= 14:  # waits until the session is really gone
                ok = await asyncio.wait_for(conn.fetchval("SELECT pg_terminate_backend($1, $2)", pid,
                                                          int(timeout * 1000)), timeout=timeout + 1)
            else:
                ok = await asyncio.wait_for(conn.fetchval("SELECT pg_terminate_backend($1)", pid), timeout=timeout)
        except (asyncpg.PostgresError, TimeoutError) as exc:
            raise ActionError(f"could not terminate pid {pid}: {exc} (the user needs pg_signal_backend or "
                              "to own that session)") from None
        return bool(ok)
