"""``migrabot report|health|blockers ENV [--json]``: the runbook's monitoring from a terminal.

    $ migrabot report prod          # sizes, index usage, connections, long queries
    $ migrabot health prod          # exit 1 when a check fails
    $ migrabot blockers prod        # who blocks whom; --terminate PID ends one session
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actions import humanize
from bot.cli import EXIT_NO, EXIT_OK, add_config_option, add_json_option, emit, environment_from_args, run_async

if TYPE_CHECKING:
    from actions.health import HealthReport
    from actions.lock_chains import BlockedChain, Session
    from actions.report import Report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="database size, largest tables, index usage, connections, long queries")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--limit", type=int, default=20, help="rows per list (default 20)")
    p.add_argument("--threshold", type=float, default=None,
                   help="seconds after which a query counts as long (default: long_query_threshold)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_report)

    p = sub.add_parser("health", help="connectivity, migration status, backup age, health URL, pgBouncer pools")
    p.add_argument("env", metavar="ENV")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_health)

    p = sub.add_parser("blockers", help="sessions waiting on locks and the sessions blocking them")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--terminate", type=int, metavar="PID",
                   help="terminate this blocking session (pg_terminate_backend)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_blockers)


# --- text rendering ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """An aligned text table; columns in ``right`` are right-aligned (numbers).

    >>> print(table(["name", "n"], [["a", 1], ["bbb", 22]], right=[1]))
    name   n
    ----  --
    a      1
    bbb   22
    """
    cells = [[str(h) for h in headers], *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])


def _more(n: int) -> list[str]:
    return [f"(+{n} more)"] if n else []


def render_report(r: Report) -> str:
    out = [f"Database {r.database}: {r.database_size} (PostgreSQL {r.server_version})", ""]
    out += ["Largest tables (public):",
            table(["table", "size", "bytes"], [[t.table, t.size, t.bytes] for t in r.tables], right=[1, 2])
            if r.tables else "  (no tables)", *_more(r.tables_more), ""]
    out += ["Index usage:",
            table(["table", "index", "scans", "size"], [[i.table, i.index, i.scans, i.size] for i in r.indexes],
                  right=[2, 3]) if r.indexes else "  (no indexes)", *_more(r.indexes_more), ""]
    if r.unused_indexes:
        out += ["Never used (idx_scan = 0; unique and primary keys excluded): consider dropping",
                table(["table", "index", "size"], [[i.table, i.index, i.size] for i in r.unused_indexes], right=[2]),
                *_more(r.unused_indexes_more), ""]
    else:
        out += ["Never-used indexes: none", ""]
    states = ", ".join(f"{state} {n}" for state, n in sorted(r.connections_by_state.items())) or "none"
    out += [f"Connections: {r.connections_database} on {r.database} ({states}; not counting this report), "
            f"{r.connections_total} on the server of max {r.max_connections}", ""]
    if r.long_queries:
        out += [f"Queries running longer than {humanize.age(r.long_query_threshold)}:",
                table(["pid", "user", "app", "state", "duration", "query"],
                      [[q.pid, q.user, q.application, q.state, humanize.age(q.duration), q.query[:80]]
                       for q in r.long_queries], right=[0, 4]), *_more(r.long_queries_more)]
    else:
        out.append(f"No query running longer than {humanize.age(r.long_query_threshold)}.")
    return "\n".join(out)


def render_health(h: HealthReport) -> str:
    rows = [[c.status.upper(), c.name, "" if c.latency_ms is None else f"{c.latency_ms:.0f} ms", c.reason]
            for c in h.checks]
    return f"Health of {h.environment}: {h.verdict.upper()}\n" + table(["status", "check", "latency", "reason"],
                                                                        rows, right=[2])


def render_blockers(chains: list[BlockedChain], roots: list[Session]) -> str:
    """The waiting sessions, and ``roots`` (``blocking_sessions(chains)``) to terminate."""
    if not chains:
        return "No session is waiting on a lock."
    out = [f"{len(chains)} session(s) waiting on a lock:"]
    for c in chains:
        w = c.waiting
        out.append(f"- pid {w.pid} ({w.application or 'no app'}, user {w.user}) waits {humanize.age(w.query_age)} "
                   f"on {w.wait_event or 'a lock'}: {w.query}")
        for b in c.blockers:
            out.append(f"    blocked by {b.describe()}")
    out += ["", "Root blockers (terminate with: migrabot blockers ENV --terminate PID):",
            table(["pid", "user", "app", "state", "xact age", "query"],
                  [[s.pid, s.user, s.application, s.state, humanize.age(s.xact_age), s.query[:80]] for s in roots],
                  right=[0, 4])]
    return "\n".join(out)


# --- commands ----------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.report import monitoring_report

    _, env = environment_from_args(args)
    threshold = args.threshold if args.threshold is not None else env.long_query_threshold
    report = run_async(monitoring_report(env.migration_url, long_query_threshold=threshold, limit=args.limit,
                                           timeout=env.connect_timeout))
    emit(args, report.to_dict(), lambda: render_report(report))
    return EXIT_OK


def run_health(args: argparse.Namespace) -> int:
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.health import health_check

    _, env = environment_from_args(args)
    report = run_async(health_check(env, timeout=env.connect_timeout))
    emit(args, report.to_dict(), lambda: render_health(report))
    return EXIT_NO if report.failed else EXIT_OK


def run_blockers(args: argparse.Namespace) -> int:
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.lock_chains import blocking_sessions, find_blockers, terminate_backend

    _, env = environment_from_args(args)
    if args.terminate is not None:
        ok = run_async(terminate_backend(env.migration_url, args.terminate, timeout=env.connect_timeout))
        text = f"pid {args.terminate} terminated." if ok else f"pid {args.terminate} is still running."
        emit(args, {"pid": args.terminate, "terminated": ok}, text)
        return EXIT_OK if ok else EXIT_NO
    chains = run_async(find_blockers(env.migration_url, timeout=env.connect_timeout))
    roots = blocking_sessions(chains)
    data = {"blocked": [c.to_dict() for c in chains], "root_blockers": [vars(s) for s in roots]}
    emit(args, data, lambda: render_blockers(chains, roots))
    return EXIT_OK
