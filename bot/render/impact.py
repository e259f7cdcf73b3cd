"""The plan's impact estimates in Slack: per statement, its lock, on how much data, and who is in the way.

    blocks = impact_blocks(plan)           # the table posted in a run's thread (and under `/migrate plan`)
    tag = impact_tag(plan, "2024_x")       # " — est. ACCESS EXCLUSIVE on `users` (1.2 GB, ~4,100,000 rows)"

The figures come from ``actions.impact`` (``plan["impact"]``: ``ImpactReport.to_dict()``): lock
levels from the documentation table, sizes and row estimates read from the live database when the
plan was made. Where a fresh rehearsal exists, the run message shows its measured verdict instead
(:func:`bot.render.rehearsal.verdict_tag`). Names and statements are data: escaped.
"""

from __future__ import annotations

from typing import Any

from actions.lock_levels import MODES, UNKNOWN
from bot.render import blocks as bk
from bot.render.reports import table_section

Blocks = list[dict[str, Any]]
COLUMNS = ("migration", "line", "lock", "on", "size", "rows", "waits for")


def _short(name: str) -> str:
    """The migration's name without its 14-digit timestamp (the table is narrow)."""
    head, _, tail = name.partition("_")
    return tail if head.isdigit() and tail else name


def _size(lock: dict[str, Any]) -> str:
    if lock.get("new"):
        return "new"
    return bk.size(lock["size_bytes"]) if lock.get("size_bytes") is not None else "-"


def _rows(lock: dict[str, Any]) -> str:
    return f"~{lock['rows_estimate']:,}" if lock.get("rows_estimate") is not None else "-"


def _waits(lock: dict[str, Any]) -> str:
    pids = [str(h.get("pid")) for h in lock.get("waits_for", [])]
    return ("pid " + ", ".join(pids)) if pids else "-"


def impact_rows(impact: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in impact.get("migrations", []):
        for st in m.get("statements", []):
            for lock in st.get("locks", []) or [{"mode": "no table lock", "relation": "-"}]:
                rows.append([_short(m["name"])[:28], str(st.get("line", "")), str(lock.get("mode", "?")),
                             str(lock.get("relation", "-"))[:30], _size(lock), _rows(lock), _waits(lock)])
    return rows


def impact_blocks(plan: dict[str, Any]) -> Blocks:
    """The estimates as a table, with what they are and are not; empty when the plan has none."""
    impact = plan.get("impact")
    if not impact:
        return []
    if impact.get("error"):
        return [bk.section(f"*Impact estimates* could not be read: {bk.esc(impact['error'])}")]
    locks = [lock for m in impact.get("migrations", []) for st in m.get("statements", [])
             for lock in st.get("locks", [])]
    if not any(lock.get("exists") for lock in locks):
        return []  # every table is made by these migrations: nothing there yet to lock or to wait for
    waiting = [h for m in impact.get("migrations", []) for h in m.get("waits_for", [])]
    out: Blocks = [table_section(
        "*Impact estimates* (lock level from PostgreSQL's documentation; size and rows of the live table now)",
        COLUMNS, impact_rows(impact), right=[1, 4, 5], empty="no statement takes a table lock")]
    for h in waiting[:5]:
        out.append(bk.section(f":hourglass: a statement would wait for pid *{h.get('pid')}* ({bk.esc(h.get('mode'))}, "
                              f"user {bk.ticked(h.get('user') or '?')}, transaction open "
                              f"{bk.duration(h.get('age') or 0)}): {bk.code(str(h.get('query') or ''), 600)}"))
    out.append(bk.context("write rates are not sampled here, to keep the plan quick; a rehearsal "
                          "(*Rehearse*) measures the real locks, hold times, rewrites and rows on a restored copy"))
    return out


def impact_tag(plan: dict[str, Any], name: str) -> str:
    """The strongest estimated lock of migration ``name`` on an existing table, for its bullet."""
    impact = plan.get("impact") or {}
    m = next((m for m in impact.get("migrations", []) if m.get("name") == name), None)
    if m is None:
        return ""
    locks = [lock for st in m.get("statements", []) for lock in st.get("locks", [])
             if lock.get("mode") in MODES and lock.get("mode") != UNKNOWN and lock.get("exists")
             and not lock.get("new")]
    if not locks:
        return ""
    top = max(locks, key=lambda lock: (MODES.index(lock["mode"]), lock.get("size_bytes") or 0))
    facts = ", ".join(x for x in (_size(top), f"{_rows(top)} rows" if top.get("rows_estimate") is not None else "")
                      if x)
    return f" — est. {bk.esc(top['mode'])} on {bk.ticked(top['relation'])} ({facts})"
