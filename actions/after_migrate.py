"""After the migrations of a run: fresh statistics for the tables they rewrote or filled, and the
environment's ``verify_queries``.

    >>> tables_to_analyze(['ALTER TABLE "users" ALTER COLUMN "id" TYPE bigint;',
    ...                    'INSERT INTO "plans" (name) VALUES (1);', 'CREATE INDEX i ON "orders" (x);'])
    ['users', 'plans']

Stale statistics after a rewrite or a bulk fill are a known cause of slow queries (the planner
still sees the old table): ``ANALYZE`` each such table that exists now. ``verify_queries`` run
in a read-only transaction with a statement timeout; each result is its first value
("``SELECT count(*) FROM users`` → 41000"), an error fails the verification.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actions.db import connection
from actions.lock_levels import REWRITE, ROWS, sql_locks

QUERY_TIMEOUT = 30.0
VALUE_LIMIT = 80


def tables_to_analyze(sqls: Iterable[str]) -> list[str]:
    """The relations the statements rewrite or write rows to, in order, each once."""
    out: list[str] = []
    for sql in sqls:
        for _, locks in sql_locks(sql):
            for lock in locks.locks:
                if lock.relation and lock.effect in (REWRITE, ROWS) and lock.relation not in out:
                    out.append(lock.relation)
    return out


async def analyze_tables(url: str, tables: list[str], *, timeout: float = 10.0,
                         statement_timeout: float | None = None) -> list[str]:
    """``ANALYZE`` each of ``tables`` that is a table now (a later migration may have dropped it); the analyzed ones."""
    done: list[str] = []
    if not tables:
        return done
    budget = statement_timeout or 600.0
    async with connection(url, timeout=timeout) as conn:
        for name in tables:
            # the name comes from the migration's text, already quoted as written: to_regclass reads it safely
            qualified = await conn.fetchval("SELECT c.oid::regclass::text FROM pg_class c "
                                            "WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'm')",
                                            name, timeout=timeout)
            if qualified is None:
                continue
            await conn.execute(f"ANALYZE {qualified}", timeout=budget)
            done.append(name)
    return done


@dataclass(frozen=True)
class QueryResult:
    query: str
    value: str | None = None
    error: str | None = None

    def describe(self) -> str:
        """``SELECT count(*) FROM users`` → 41000 (or → error: …)."""
        shown = " ".join(self.query.split())
        return f"`{shown}` → " + (f"error: {self.error}" if self.error else str(self.value))


async def run_verify_queries(url: str, queries: Iterable[str], *, timeout: float = 10.0,
                             statement_timeout: float | None = None) -> list[QueryResult]:
    """Each query in a read-only transaction; its first value, or its error (the others still run)."""
    results: list[QueryResult] = []
    queries = list(queries)
    if not queries:
        return results
    budget = statement_timeout or QUERY_TIMEOUT
    async with connection(url, timeout=timeout) as conn:
        for query in queries:
            try:
                async with conn.transaction(readonly=True):
                    row = await conn.fetchrow(query, timeout=budget)
            except TimeoutError:
                results.append(QueryResult(query, error=f"did not answer within {budget:g} s"))
                continue
            except Exception as exc:
                results.append(QueryResult(query, error=" ".join(str(exc).split())[:200] or type(exc).__name__))
                continue
            value = None if row is None or len(row) == 0 else row[0]
            shown = "no row" if row is None else str(value)
            results.append(QueryResult(query, value=shown[:VALUE_LIMIT]))
    return results


def compared_with_rehearsal(answers: list[QueryResult], rehearsal: Mapping[str, Any] | None, applied: list[str],
                            checksums: Mapping[str, str]) -> list[str]:
    """Each answer, with the rehearsal's answer to the same query where the rehearsal applied these same files.

    The copy was restored from an older backup, so a difference is information, not an error.

    >>> kept = {"checksums": {"01_a": "c1"}, "started_at": "2024-05-01T10:00:00",
    ...         "verify": [{"query": "SELECT 1", "value": "1", "error": None}]}
    >>> compared_with_rehearsal([QueryResult("SELECT 1", "1")], kept, ["01_a"], {"01_a": "c1"})
    ['`SELECT 1` → 1 (rehearsal of 2024-05-01: 1, the same)']
    >>> compared_with_rehearsal([QueryResult("SELECT 1", "1")], kept, ["01_a"], {"01_a": "c2"})
    ['`SELECT 1` → 1']
    """
    rehearsed: dict[str, Any] = {}
    if rehearsal and applied and all((rehearsal.get("checksums") or {}).get(n) == checksums.get(n) for n in applied):
        rehearsed = {v.get("query"): v for v in rehearsal.get("verify") or []}
    out = []
    for a in answers:
        line = a.describe()
        before = rehearsed.get(a.query)
        if before and not a.error and not before.get("error"):
            same = "the same" if before.get("value") == a.value else "differs: the copy was of an older backup"
            line += f" (rehearsal of {str(rehearsal.get('started_at', ''))[:10] if rehearsal else ''}: " \
                    f"{before.get('value')}, {same})"
        out.append(line)
    return out
