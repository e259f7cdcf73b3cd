"""The runbook's monitoring queries as one report: sizes, index usage, connections, long queries.

    report = await monitoring_report("postgresql://app@db/prod", long_query_threshold=60)
    report.database_size                  # '1234 MB'
    report.unused_indexes[0].index        # an index never scanned (unique/primary keys excluded)
    report.to_dict()                      # JSON-ready, for --json and Slack

Differences from the runbook's SQL, on purpose:

* table sizes use ``format('%I.%I', schemaname, tablename)``: the runbook's
  ``schemaname||'.'||tablename`` fails on Prisma's mixed-case tables (``"User"``);
* the connection count is broken down by state for this database, besides the runbook's
  server-wide ``count(*)``; this report's own session is left out of the breakdown;
* "long" queries: sessions of this database whose current query (or, when idle in a
  transaction, whose transaction) started more than ``long_query_threshold`` seconds ago.

Every list is cut to ``limit`` rows and says how many more there were (``*_more``).
Every query runs under ``statement_timeout`` = ``timeout``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from actions.db import CONNECTION_ERRORS, connection, database_name, lost_connection_error
from actions.errors import ActionError
from bot.redact import redact

QUERY_CHARS = 200


def trim_query(query: str | None, limit: int = QUERY_CHARS) -> str:
    """A query on one line, cut to ``limit`` characters, passwords redacted.

    >>> trim_query("ALTER USER app PASSWORD 'x'  \\n  -- why")
    "ALTER USER app PASSWORD 'x' -- why"
    """
    if not query:
        return ""
    one_line = " ".join(query.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return redact(one_line)


@dataclass
class TableSize:
    schema: str
    table: str
    bytes: int
    size: str  # pg_size_pretty


@dataclass
class IndexUsage:
    schema: str
    table: str
    index: str
    scans: int
    bytes: int
    size: str
    unique: bool
    primary: bool


@dataclass
class LongQuery:
    pid: int
    user: str | None
    application: str | None
    state: str | None
    duration: float  # seconds
    query: str  # trimmed and redacted


@dataclass
class Report:
    database: str
    database_bytes: int
    database_size: str
    server_version: str
    generated_at: datetime
    tables: list[TableSize] = field(default_factory=list)
    tables_more: int = 0
    indexes: list[IndexUsage] = field(default_factory=list)
    indexes_more: int = 0
    unused_indexes: list[IndexUsage] = field(default_factory=list)
    unused_indexes_more: int = 0
    connections_by_state: dict[str, int] = field(default_factory=dict)  # this database, without us
    connections_database: int = 0  # this database, including us
    connections_total: int = 0  # the runbook's count(*) FROM pg_stat_activity (server-wide)
    max_connections: int = 0
    long_query_threshold: float = 60.0
    long_queries: list[LongQuery] = field(default_factory=list)
    long_queries_more: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["generated_at"] = self.generated_at.isoformat()
        for key in ("tables", "indexes", "unused_indexes", "long_queries"):
            data[f"{key}_more"] = getattr(self, f"{key}_more")
        return data


_TABLES = """
SELECT schemaname, tablename,
       pg_total_relation_size(format('%I.%I', schemaname, tablename)) AS bytes,
       pg_size_pretty(pg_total_relation_size(format('%I.%I', schemaname, tablename))) AS size,
       count(*) OVER () AS total
FROM pg_tables
WHERE schemaname = 'public'
ORDER BY bytes DESC, tablename
LIMIT $1
"""

_INDEXES = """
SELECT s.schemaname, s.relname AS tablename, s.indexrelname AS indexname, s.idx_scan AS index_scans,
       pg_relation_size(s.indexrelid) AS bytes, pg_size_pretty(pg_relation_size(s.indexrelid)) AS size,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, count(*) OVER () AS total
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE ($2 OR (s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary))
ORDER BY CASE WHEN $2 THEN s.idx_scan END DESC, bytes DESC, s.indexrelname
LIMIT $1
"""

_CONNECTIONS = """
SELECT coalesce(state, 'unknown') AS state, count(*) AS n
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
GROUP BY 1 ORDER BY 1
"""

_COUNTS = """
SELECT (SELECT count(*) FROM pg_stat_activity) AS total,
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS this_db,
       current_setting('max_connections')::int AS max_connections,
       current_setting('server_version') AS version,
       pg_database_size(current_database()) AS db_bytes,
       pg_size_pretty(pg_database_size(current_database())) AS db_size
"""

_LONG = """
SELECT pid, usename, application_name, state, query,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start
                                       ELSE coalesce(xact_start, query_start) END)::float8 AS seconds,
       count(*) OVER () AS total
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND state IS NOT NULL AND state <> 'idle'
  AND CASE WHEN state = 'active' THEN query_start ELSE coalesce(xact_start, query_start) END
      < now() - make_interval(secs => $1)
ORDER BY seconds DESC
LIMIT $2
"""


def _more(rows: list[asyncpg.Record]) -> int:
    return int(rows[0]["total"]) - len(rows) if rows else 0


def _index(r: asyncpg.Record) -> IndexUsage:
    return IndexUsage(r["schemaname"], r["tablename"], r["indexname"], int(r["index_scans"] or 0), int(r["bytes"]),
                      r["size"], bool(r["is_unique"]), bool(r["is_primary"]))


async def monitoring_report(url: str, *, long_query_threshold: float = 60.0, limit: int = 20,
                            timeout: float = 10) -> Report:
    """Run the runbook's monitoring queries on ``url`` (read-only) and return a :class:`Report`."""
    settings = {"statement_timeout": str(int(timeout * 1000))}
    async with connection(url, timeout=timeout, server_settings=settings) as conn:
        try:
            counts = await conn.fetchrow(_COUNTS)
            tables = await conn.fetch(_TABLES, limit)
            indexes = await conn.fetch(_INDEXES, limit, True)
            unused = await conn.fetch(_INDEXES, limit, False)
            states = await conn.fetch(_CONNECTIONS)
            long_rows = await conn.fetch(_LONG, float(long_query_threshold), limit)
        except (asyncpg.QueryCanceledError, TimeoutError):
            raise ActionError(f"the monitoring queries on {database_name(url)} took longer than {timeout:g}s: "
                              "the server is busy; try again or raise the timeout") from None
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ActionError(f"the database user may not read the statistics ({exc}): grant it pg_monitor") \
                from None
        except CONNECTION_ERRORS as exc:
            raise lost_connection_error(exc, f"running the monitoring queries on {database_name(url)}",
                                        "nothing was changed (the report only reads)",
                                        "check the server (`migrabot health ENV`) and run the report again",
                                        closed=conn.is_closed()) from None
    return Report(
        database=database_name(url), database_bytes=int(counts["db_bytes"]), database_size=counts["db_size"],
        server_version=counts["version"], generated_at=datetime.now(UTC),
        tables=[TableSize(r["schemaname"], r["tablename"], int(r["bytes"]), r["size"]) for r in tables],
        tables_more=_more(tables),
        indexes=[_index(r) for r in indexes], indexes_more=_more(indexes),
        unused_indexes=[_index(r) for r in unused], unused_indexes_more=_more(unused),
        connections_by_state={r["state"]: int(r["n"]) for r in states},
        connections_database=int(counts["this_db"]), connections_total=int(counts["total"]),
        max_connections=int(counts["max_connections"]), long_query_threshold=float(long_query_threshold),
        long_queries=[LongQuery(r["pid"], r["usename"], r["application_name"], r["state"], float(r["seconds"]),
                                trim_query(r["query"])) for r in long_rows],
        long_queries_more=_more(long_rows),
    )
