"""Rehearsals in Slack: the "started" note, the result table, and the run message's rehearsal line.

    text, blocks = rehearsal_result(result)      # result: actions.rehearsal.RehearsalResult
    lines = rehearsal_lines(plan)                 # the run message: fresh, stale or failed

Statement texts, errors and names come from the migrations and the database: all escaped (the
tables go inside code blocks, which :func:`bot.render.blocks.code` escapes).
"""

from __future__ import annotations

from typing import Any

from bot.render import blocks as bk
from bot.render.reports import table_section

Blocks = list[dict[str, Any]]
COLUMNS = ("statement", "lock", "held for", "rewrite", "rows", "time")
MAX_MIGRATIONS = 20  # one section each; the message stays under 50 blocks
STATEMENT_WIDTH = 48


def rehearsal_started(env_name: str, pending: int | None, *, by: str) -> tuple[str, Blocks]:
    what = f"{pending} pending migration(s)" if pending is not None else "the pending migrations"
    text = (f":hourglass_flowing_sand: Rehearsal of *{env_name}* started by {bk.user(by)}: the newest verified "
            f"backup is restored into a scratch copy and {what} applied there, one statement at a time. "
            "*This can take minutes* (the restore takes about as long as a restore of the backup). The live "
            "database is only read; the copy is dropped afterwards.")
    return f"Rehearsal of {env_name} started", [bk.section(text)]


def rehearsal_refused(env_name: str, reason: str) -> tuple[str, Blocks]:
    text = f":x: The rehearsal of *{env_name}* could not run: {bk.esc(reason)}. Nothing was applied anywhere."
    return f"Rehearsal of {env_name} could not run", [bk.section(text)]


def _row(row: dict[str, str]) -> list[str]:
    statement = row["statement"]
    if len(statement) > STATEMENT_WIDTH:
        statement = statement[: STATEMENT_WIDTH - 1] + "…"
    return [statement, *(row[c] for c in COLUMNS[1:])]


def rehearsal_result(result: Any) -> tuple[str, Blocks]:
    """The result of :func:`actions.rehearsal.rehearse`: a headline, then per migration its verdict and table."""
    env = result.environment
    failed = result.failed
    if result.ok:
        head = f":white_check_mark: *Rehearsal of {env} passed*: every pending migration applied on the restored copy."
    elif failed is not None:
        head = (f":x: *Rehearsal of {env} FAILED* at {bk.ticked(failed.name)}: {bk.esc(failed.verdict)}. "
                f"Nothing was applied to {env}: fix the migration before anyone runs it there.")
    else:
        head = f":warning: *Rehearsal of {env} did not apply every migration*: see below."
    facts = [f"backup {bk.ticked(result.backup_id)} restored into {bk.ticked(result.scratch_database)} on "
             f"{bk.esc(result.server)}"]
    if result.restore_tested:
        facts.append(f":repeat: {bk.esc(result.restore_tested)}")
    if result.caught_up:
        facts.append("caught up first (applied live after the backup): "
                     + ", ".join(bk.ticked(n) for n in result.caught_up[:10]))
    if not result.pending:
        facts.append("nothing pending: only the restore was tested")
    out: Blocks = [bk.section(head), bk.section("\n".join(facts))]
    for m in result.migrations[:MAX_MIGRATIONS]:
        icon = {"applied": ":large_green_circle:" if m.verdict == "safe while the app runs" else ":warning:",
                "failed": ":x:"}.get(m.status, ":heavy_minus_sign:")
        title = f"{icon} {bk.ticked(m.name)}: {bk.esc(m.verdict)}"
        if m.statements:
            out.append(table_section(title, COLUMNS, [_row(s.row()) for s in m.statements], right=[4]))
        else:
            out.append(bk.section(title))
        if m.status == "failed" and m.error:
            out.append(bk.section(f"Error:\n{bk.code(m.error, 1500)}"))
    if len(result.migrations) > MAX_MIGRATIONS:
        out.append(bk.context(f"… {len(result.migrations) - MAX_MIGRATIONS} more migrations: "
                              f"`migrabot rehearse {bk.esc(env)} --json` lists them all"))
    dropped = "dropped" if result.dropped else "*not* dropped (the next rehearsal drops it)"
    took = f" · took {bk.duration(result.duration)}" if result.duration is not None else ""
    out.append(bk.context(f"the scratch copy was {dropped}{took} · hold times from `pg_locks`, rows from "
                          "`pg_stat_*`"))
    text = f"Rehearsal of {env}: " + ("passed" if result.ok else f"failed: {failed.verdict if failed else '?'}")
    return text, bk.fit_blocks(out)


def rehearsal_lines(plan: dict[str, Any]) -> list[str]:
    """The run message's rehearsal line: none yet, fresh (with each migration's verdict), stale or failed."""
    r = plan.get("rehearsal")
    if not r:
        return [":test_tube: Not rehearsed yet: *Rehearse* applies these migrations to a restored copy first."]
    when = str(r.get("at") or "")[:16].replace("T", " ") + " UTC"
    if r.get("stale"):
        return [f":hourglass: Rehearsal of {when} is *stale*: {bk.esc(r['stale'])}. Rehearse again."]
    if not r.get("ok"):
        return [f":x: Rehearsal of {when} *failed*: {bk.esc(r.get('failed') or 'see its thread')}"]
    return [f":test_tube: Rehearsal of {when} is *fresh* (backup {bk.ticked(r.get('backup_id'))}; same files)."]


def verdict_tag(plan: dict[str, Any], name: str) -> str:
    """" — rehearsed: blocks writes to `users` for ~12 s" after a migration's bullet, while the rehearsal is fresh."""
    r = plan.get("rehearsal") or {}
    verdict = (r.get("verdicts") or {}).get(name)
    if not verdict or r.get("stale"):
        return ""
    return f" — rehearsed: {bk.esc(verdict)}"
