"""What each pending statement would do to the live database right now: lock, size, write rate, who is in the way.

    >>> report = await impact(env.migration_url, [("20240301_email", sql)], lock_timeout=1.0)  # doctest: +SKIP
    >>> lock = report.migrations[0].statements[0].locks[0]                                    # doctest: +SKIP
    >>> lock.mode, lock.rows_estimate, lock.writes_per_second, [h.pid for h in lock.waits_for]  # doctest: +SKIP
    ('ACCESS EXCLUSIVE', 41000000, 230.5, [4242])

For each statement of each migration (split like the engine splits them): the lock level the
documentation table gives (``actions.lock_levels``) and, for each relation it names, read from
the live database:

* its size and row estimate: ``pg_total_relation_size`` and ``pg_class.reltuples`` (for an
  index, its table's; ``None`` when the table was never analyzed);
* its write rate: ``n_tup_ins + n_tup_upd + n_tup_del`` of ``pg_stat_user_tables`` read twice,
  ``write_rate_interval`` seconds apart (other sessions publish their counters at most once a
  second, and an idle one up to 10 s late on PostgreSQL 15, so this is an approximation);
* the transactions running now that would make the statement wait: sessions holding a lock on
  the table in a mode that conflicts with the statement's, open longer than ``lock_timeout``
  (a shorter one is likely to finish before the lock timeout fires).

Only reads: no lock beyond what a SELECT on the catalog takes. A relation created earlier in the
same batch of migrations is marked ``new``: nobody can be waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from actions import humanize
from actions.db import connection
from actions.lock_levels import UNKNOWN, StatementLocks, blocks, conflicts, sql_locks
from actions.report import trim_query
from actions.status import migration_status

DEFAULT_WRITE_RATE_INTERVAL = 3.0
SQL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Holder:
    """A session holding a lock that makes the statement wait."""

    pid: int
    mode: str
    age: float  # seconds its transaction has been open
    state: str | None
    user: str | None
    application: str | None
    query: str

    def describe(self) -> str:
        app = self.application or "no application_name"
        return (f"pid {self.pid} ({app}, user {self.user}, {self.state or 'unknown state'}, transaction open "
                f"{humanize.age(self.age)}, holds {self.mode}): {self.query}")

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "mode": self.mode, "age": round(self.age, 1), "state": self.state,
                "user": self.user, "application": self.application, "query": self.query}


@dataclass
class TableFacts:
    """What the live database says about one relation a statement names."""

    relation: str
    exists: bool = False
    table: str | None = None  # the table (itself, or the table of an index)
    size_bytes: int | None = None
    rows_estimate: int | None = None
    writes_per_second: float | None = None
    oid: int | None = None
    table_oid: int | None = None


@dataclass
class LockImpact:
    relation: str
    mode: str
    effect: str
    new: bool = False  # created earlier in the same batch: nobody can be waiting
    exists: bool = False
    table: str | None = None
    size_bytes: int | None = None
    rows_estimate: int | None = None
    writes_per_second: float | None = None
    waits_for: list[Holder] = field(default_factory=list)

    @property
    def blocks(self) -> str:
        return blocks(self.mode)

    def describe(self) -> str:
        """One line: "ACCESS EXCLUSIVE on users (1.2 GB, ~4,100,000 rows, 230 writes/s): scan, blocks reads and …"."""
        facts = []
        if self.new:
            facts.append("new in this batch")
        elif not self.exists:
            facts.append("not in the database")
        if self.size_bytes is not None:
            facts.append(humanize.size(self.size_bytes))
        if self.rows_estimate is not None:
            facts.append(f"~{self.rows_estimate:,} rows")
        if self.writes_per_second is not None:
            facts.append(f"{self.writes_per_second:.0f} writes/s")
        inside = f" ({', '.join(facts)})" if facts else ""
        waits = f"; waits for {len(self.waits_for)} session(s)" if self.waits_for else ""
        return f"{self.mode} on {self.relation}{inside}: {self.effect}, blocks {self.blocks}{waits}"

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "mode": self.mode, "effect": self.effect, "blocks": self.blocks,
                "new": self.new, "exists": self.exists, "table": self.table, "size_bytes": self.size_bytes,
                "rows_estimate": self.rows_estimate,
                "writes_per_second": None if self.writes_per_second is None else round(self.writes_per_second, 2),
                "waits_for": [h.to_dict() for h in self.waits_for]}


@dataclass
class StatementImpact:
    index: int
    line: int
    statement: str
    form: str
    notes: list[str] = field(default_factory=list)
    locks: list[LockImpact] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return all(lock.mode != UNKNOWN for lock in self.locks)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "line": self.line, "statement": self.statement, "form": self.form,
                "notes": list(self.notes), "known": self.known, "locks": [lock.to_dict() for lock in self.locks]}


@dataclass
class MigrationImpact:
    name: str
    statements: list[StatementImpact] = field(default_factory=list)

    @property
    def waits_for(self) -> list[Holder]:
        """Every session that would make one of its statements wait (each once)."""
        seen: dict[int, Holder] = {}
        for st in self.statements:
            for lock in st.locks:
                for holder in lock.waits_for:
                    seen.setdefault(holder.pid, holder)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statements": [s.to_dict() for s in self.statements],
                "waits_for": [h.to_dict() for h in self.waits_for]}


@dataclass
class ImpactReport:
    migrations: list[MigrationImpact]
    lock_timeout: float
    write_rate_interval: float
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {"measured_at": self.measured_at.isoformat(), "lock_timeout": self.lock_timeout,
                "write_rate_interval": self.write_rate_interval,
                "migrations": [m.to_dict() for m in self.migrations]}


_FACTS = """
SELECT n.name, c.oid::int8 AS oid, t.oid::int8 AS table_oid, t.oid::regclass::text AS table_name,
       pg_total_relation_size(c.oid) AS size, t.reltuples::float8 AS reltuples
FROM unnest($1::text[]) AS n(name)
JOIN pg_class c ON c.oid = to_regclass(n.name)
LEFT JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = coalesce(i.indrelid, c.oid)
"""
_WRITES = """
SELECT relid::int8 AS oid, n_tup_ins + n_tup_upd + n_tup_del AS writes
FROM pg_stat_user_tables WHERE relid = ANY($1::oid[])
"""
_HOLDERS = """
SELECT l.relation::int8 AS oid, l.mode, l.pid, a.usename, a.application_name, a.state, a.query,
       extract(epoch FROM now() - a.xact_start)::float8 AS age
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.relation = ANY($1::oid[]) AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _plan(migrations: list[tuple[str, str]]) -> list[tuple[str, list[tuple[Any, StatementLocks]]]]:
    return [(name, sql_locks(sql)) for name, sql in migrations]


async def _facts(conn: asyncpg.Connection, names: list[str], interval: float) -> dict[str, TableFacts]:
    facts = {name: TableFacts(name) for name in names}
    for r in await conn.fetch(_FACTS, names, timeout=SQL_TIMEOUT):
        f = facts[r["name"]]
        f.exists, f.oid, f.table_oid, f.table = True, r["oid"], r["table_oid"], r["table_name"]
        f.size_bytes = int(r["size"])
        f.rows_estimate = int(r["reltuples"]) if r["reltuples"] is not None and r["reltuples"] >= 0 else None
    tables = sorted({f.table_oid for f in facts.values() if f.table_oid is not None})
    if tables and interval > 0:
        first = {r["oid"]: r["writes"] for r in await conn.fetch(_WRITES, tables, timeout=SQL_TIMEOUT)}
        t0 = asyncio.get_running_loop().time()
        await asyncio.sleep(interval)
        await conn.execute("SELECT pg_stat_clear_snapshot()", timeout=SQL_TIMEOUT)
        second = {r["oid"]: r["writes"] for r in await conn.fetch(_WRITES, tables, timeout=SQL_TIMEOUT)}
        elapsed = asyncio.get_running_loop().time() - t0
        for f in facts.values():
            if f.table_oid in first and f.table_oid in second:
                f.writes_per_second = max(0, second[f.table_oid] - first[f.table_oid]) / elapsed
    return facts


async def _holders(conn: asyncpg.Connection, table_oids: list[int]) -> dict[int, list[tuple[str, Holder]]]:
    by_table: dict[int, list[tuple[str, Holder]]] = {}
    if not table_oids:
        return by_table
    for r in await conn.fetch(_HOLDERS, table_oids, timeout=SQL_TIMEOUT):
        holder = Holder(r["pid"], r["mode"], float(r["age"] or 0.0), r["state"], r["usename"],
                        r["application_name"], trim_query(r["query"]))
        by_table.setdefault(r["oid"], []).append((r["mode"], holder))
    return by_table


async def impact(url: str, migrations: Iterable[tuple[str, str]], *, lock_timeout: float = 1.0,
                 write_rate_interval: float = DEFAULT_WRITE_RATE_INTERVAL, timeout: float = 10.0) -> ImpactReport:
    """The impact of ``(name, sql)`` migrations on the database behind ``url``, measured now (read-only).

    Takes ``write_rate_interval`` seconds (the write rate's two samples); 0 skips the write rate.
    """
    pairs = list(migrations)
    plan = _plan(pairs)
    names = sorted({lock.relation for _, statements in plan for _, sl in statements for lock in sl.locks
                    if lock.relation})
    async with connection(url, timeout=timeout) as conn:
        facts = await _facts(conn, names, write_rate_interval)
        table_oids = sorted({f.table_oid for f in facts.values() if f.table_oid is not None})
        holders = await _holders(conn, table_oids)
    report = ImpactReport([], lock_timeout, write_rate_interval)
    created: set[str] = set()
    for name, statements in plan:
        migration = MigrationImpact(name)
        for index, (st, sl) in enumerate(statements, 1):
            item = StatementImpact(index, st.line, trim_query(st.text, 200), sl.form, list(sl.notes))
            for lock in sl.locks:
                item.locks.append(_lock_impact(lock.relation, lock.mode, lock.effect, facts, holders, created,
                                               lock_timeout))
            created.update(sl.creates)
            migration.statements.append(item)
        report.migrations.append(migration)
    return report


def _lock_impact(relation: str | None, mode: str, effect: str, facts: dict[str, TableFacts],
                 holders: dict[int, list[tuple[str, Holder]]], created: set[str], lock_timeout: float) -> LockImpact:
    if relation is None:
        return LockImpact("(unknown)", mode, effect)
    f = facts.get(relation, TableFacts(relation))
    item = LockImpact(relation, mode, effect, new=relation in created, exists=f.exists, table=f.table,
                      size_bytes=f.size_bytes, rows_estimate=f.rows_estimate, writes_per_second=f.writes_per_second)
    if mode != UNKNOWN and f.table_oid is not None and not item.new:
        item.waits_for = [h for held, h in holders.get(f.table_oid, [])
                          if conflicts(held, mode) and h.age >= lock_timeout]
    return item


async def impact_of_pending(url: str, migrations_dir: Path, *, lock_timeout: float = 1.0,
                            write_rate_interval: float = DEFAULT_WRITE_RATE_INTERVAL,
                            timeout: float = 10.0) -> ImpactReport:
    """:func:`impact` of the migrations pending on the database behind ``url`` (as ``migrabot status`` sees them)."""
    status = await migration_status(url, migrations_dir, timeout=timeout)
    local = status.local_by_name()
    return await impact(url, [(name, local[name].sql) for name in status.pending], lock_timeout=lock_timeout,
                        write_rate_interval=write_rate_interval, timeout=timeout)
