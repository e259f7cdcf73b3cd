"""`/db report|health|blockers` as Slack messages: pure functions from results to (text, blocks).

    >>> print(aligned(["table", "size"], [["User", "1.2 MB"], ["small", "8.0 kB"]], right=[1]))
    table    size
    -----  ------
    User   1.2 MB
    small  8.0 kB

Tables go inside code blocks so their columns line up; a list that does not fit a section
(3000 characters) keeps the rows that fit and says how many more there were, and a
message never has more than 50 blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.render import blocks as bk

Blocks = list[dict[str, Any]]
CODE_BUDGET = 2800  # characters of table inside one section, leaving room for its title and "N more"
QUERY_IN_TABLE = 60
MAX_ROOT_BUTTONS = 20
VERDICT_ICON = {"pass": ":white_check_mark:", "warn": ":warning:", "fail": ":x:"}


def aligned(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """An aligned text table; columns in ``right`` are right-aligned (numbers, sizes)."""
    cells = [[str(h) for h in headers], *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])


def table_section(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], *,
                  right: Sequence[int] = (), more: int = 0, empty: str = "none") -> dict[str, Any]:
    """``title`` and an aligned table in a code block, cut by whole rows to fit one section.

    ``more`` is how many rows the query itself left out; they are added to the "N more" count.
    """
    if not rows:
        return bk.section(f"{title}\n_{empty}_")
    kept = len(rows)
    body = aligned(headers, rows, right)
    while len(body) > CODE_BUDGET and kept > 1:
        kept -= 1
        body = aligned(headers, rows[:kept], right)
    left_out = len(rows) - kept + more
    tail = f"\n… {left_out} more" if left_out else ""
    return bk.section(f"{title}\n{bk.code(body)}{tail}")


def short_query(query: str | None, limit: int = QUERY_IN_TABLE) -> str:
    one_line = " ".join((query or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def age(seconds: float | None) -> str:
    """
    >>> age(None), age(4.2), age(125)
    ('', '4s', '2m 5s')
    """
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f}s"
    return bk.duration(seconds)


# --- /db report -------------------------------------------------------------------------------------


def report_message(env_name: str, report: Any) -> tuple[str, Blocks]:
    """The monitoring report (:class:`actions.report.Report`) of ``env_name``."""
    r = report
    text = f"Database report: {env_name} ({bk.esc(r.database)}, {bk.size(r.database_bytes)})"
    out: Blocks = [bk.header(f"Database report: {env_name}")]
    out.append(bk.section(f"Database {bk.ticked(r.database)}: *{bk.size(r.database_bytes)}* · PostgreSQL "
                          f"{bk.esc(r.server_version.split()[0])}"))
    out.append(table_section("*Largest tables* (total size with indexes and TOAST)", ["table", "size"],
                             [[f"{t.schema}.{t.table}" if t.schema != "public" else t.table, bk.size(t.bytes)]
                              for t in r.tables], right=[1], more=r.tables_more, empty="no tables"))
    out.append(table_section("*Index usage*", ["table", "index", "scans", "size"],
                             [[i.table, i.index, i.scans, bk.size(i.bytes)] for i in r.indexes],
                             right=[2, 3], more=r.indexes_more, empty="no indexes"))
    if r.unused_indexes:
        out.append(table_section(":warning: *Never-used indexes* (no scan since statistics were reset; unique and "
                                 "primary keys left out): each costs writes and space, consider dropping it",
                                 ["table", "index", "size"],
                                 [[i.table, i.index, bk.size(i.bytes)] for i in r.unused_indexes],
                                 right=[2], more=r.unused_indexes_more))
    else:
        out.append(bk.section("*Never-used indexes*: none"))
    states = sorted(r.connections_by_state.items(), key=lambda kv: (-kv[1], kv[0]))
    out.append(table_section(
        f"*Connections* on {bk.ticked(r.database)} by state (this report's own left out) · "
        f"{r.connections_total} on the server of max {r.max_connections}", ["state", "count"], states, right=[1],
        empty="no other connection"))
    out.append(table_section(
        f"*Queries running longer than {age(r.long_query_threshold)}*",
        ["pid", "user", "app", "state", "for", "query"],
        [[q.pid, q.user, short_query(q.application, 20), q.state, age(q.duration), short_query(q.query)]
         for q in r.long_queries], right=[0, 4], more=r.long_queries_more, empty="none"))
    out.append(bk.context(f"`/db report {env_name}` · {r.generated_at:%Y-%m-%d %H:%M:%S} UTC"))
    return text, bk.fit_blocks(out)


# --- /db health -------------------------------------------------------------------------------------


def health_message(health: Any, *, scheduled: bool = False) -> tuple[str, Blocks]:
    """Every check of a :class:`actions.health.HealthReport` with its reason, and the overall verdict."""
    verdict = health.verdict
    title = f"Health of {health.environment}: {verdict.upper()}"
    lines = []
    for c in health.checks:
        took = f" ({c.latency_ms:.0f} ms)" if c.latency_ms is not None else ""
        lines.append(f"{VERDICT_ICON.get(c.status, '')} *{bk.esc(c.name)}* — {c.status}: {bk.esc(c.reason)}{took}")
    summary = {"pass": "Every check passed.",
               "warn": "No check failed; the warnings are worth a look.",
               "fail": f"{len(health.failed)} check(s) failed: "
                       + ", ".join(bk.esc(c.name) for c in health.failed) + "."}
    head = f"{VERDICT_ICON.get(verdict, '')} *{title}*. {summary.get(verdict, '')}"
    out: Blocks = [bk.section(head)]
    chunk: list[str] = []
    for line in lines:  # one section per ~2900 characters of checks
        if chunk and len("\n".join([*chunk, line])) > 2900:
            out.append(bk.section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        out.append(bk.section("\n".join(chunk)))
    origin = "scheduled health check (posted because a check failed)" if scheduled else \
        f"`/db health {health.environment}`"
    out.append(bk.context(f"{origin} · {health.checked_at:%Y-%m-%d %H:%M:%S} UTC"))
    return title, bk.fit_blocks(out)


# --- /db blockers -----------------------------------------------------------------------------------


def describe_session(s: Any, *, age_of: str = "xact") -> str:
    """One session in words: pid, user, application, state, age and its (redacted) query."""
    seconds = s.xact_age if age_of == "xact" else s.query_age
    what = "transaction open" if age_of == "xact" else "waiting"
    when = f", {what} {age(seconds)}" if seconds is not None else ""
    return (f"pid *{s.pid}* · user {bk.ticked(s.user or '?')} · app {bk.ticked(s.application or '—')} · "
            f"{bk.esc(s.state or 'unknown state')}{when}")


def blockers_message(env_name: str, chains: Sequence[Any], roots: Sequence[Any]) -> tuple[str, Blocks]:
    """Who blocks whom in ``env_name``, with a Terminate button (and a confirm dialog) per root blocker."""
    if not chains:
        text = f":white_check_mark: No session is waiting on a lock in {env_name}."
        return text, [bk.section(text), bk.context(f"`/db blockers {env_name}`")]
    text = f":lock: {len(chains)} session(s) waiting on a lock in {env_name}"
    out: Blocks = [bk.header(f"Blocked sessions: {env_name}")]
    lines = [f"*{len(chains)} session(s) waiting on a lock*"]
    for c in chains:
        w = c.waiting
        by = ", ".join(str(b.pid) for b in c.blockers) or "?"
        line = (f"• {describe_session(w, age_of='query')} on {bk.esc(w.wait_event or 'a lock')}, blocked by pid {by}\n"
                f"      {bk.ticked(short_query(w.query, 150))}")
        if len("\n".join([*lines, line])) > 2800:
            lines.append(f"… {len(chains) - len(lines) + 1} more waiting")
            break
        lines.append(line)
    out.append(bk.section("\n".join(lines)))
    out.append(bk.section(f"*Root blocker{'s' if len(roots) != 1 else ''}* (they wait on nobody; ending one "
                          "rolls back its open transaction):"))
    for s in roots[:MAX_ROOT_BUTTONS]:
        button = bk.button(":skull: Terminate…", "terminate_blocker", f"{env_name}:{s.pid}", style="danger",
                           confirm=bk.confirm_dialog(
                               f"Terminate pid {s.pid}?",
                               f"This asks for a terminate run of pid {s.pid} (user {bk.esc(s.user or '?')}) on "
                               f"{env_name}: its transaction is rolled back and its client disconnected. "
                               "Approvals apply where the environment needs them.",
                               confirm="Terminate", deny="Cancel"))
        out.append(bk.section(f"{describe_session(s)}\n{bk.code(short_query(s.query, 600))}", accessory=button))
    if len(roots) > MAX_ROOT_BUTTONS:
        out.append(bk.context(f"… {len(roots) - MAX_ROOT_BUTTONS} more root blockers: "
                              f"`migrabot blockers {env_name}` lists them all"))
    out.append(bk.context(f"`/db blockers {env_name}` · Terminate starts a run with the usual lock and approvals"))
    return text, bk.fit_blocks(out)


# --- scheduled runs ---------------------------------------------------------------------------------


def schedule_list(rows: Sequence[dict[str, Any]], recurring: Sequence[str]) -> tuple[str, Blocks]:
    """`/migrate schedule`: pending scheduled runs (each a dict with run, env, at, confirmed) and recurring jobs."""
    if rows:
        lines = [f"*Scheduled runs* ({len(rows)})"]
        for r in rows[:30]:
            lines.append(f"• run #{r['run_id']} on *{r['env']}* at {r['at']}, requested by {bk.user(r['by'])}"
                         f"{r.get('note', '')}")
        if len(rows) > 30:
            lines.append(f"… {len(rows) - 30} more")
    else:
        lines = ["No scheduled runs. Schedule one with `/migrate ENV at 22:00` or `/migrate ENV in 2h`."]
    if recurring:
        lines += ["", "*Recurring jobs*", *[f"• {r}" for r in recurring[:20]]]
    text = "\n".join(lines)
    return text, [bk.section(text)]
