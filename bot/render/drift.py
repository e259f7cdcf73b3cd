"""Drift reports in Slack: `/db drift ENV`, the scheduled check and the checklist item's thread reply.

    text, blocks = drift_message(report)            # report: actions.drift.DriftReport
    text, blocks = drift_message(report, origin="scheduled drift check (posted because the findings changed)")

Every line comes from the database or the files (object names, types, SQL), so all of it is
escaped. A long list keeps the first :data:`MAX_LISTED` findings and says how many more there are;
every section stays under Slack's 3000 characters and the message under 50 blocks.
"""

from __future__ import annotations

from typing import Any

from bot.render import blocks as bk

Blocks = list[dict[str, Any]]
MAX_LISTED = 25  # findings shown in Slack; `migrabot drift ENV --json` lists them all
SECTION_BUDGET = 2800
FIX_IN_LINE = 300
ICON = {"in sync": ":white_check_mark:", "drifted": ":warning:", "could not check": ":grey_question:"}


def _finding_lines(report: Any) -> list[tuple[str | None, str]]:
    """(group, line) for every finding, in report order; group None for lines without an object."""
    out: list[tuple[str | None, str]] = []
    for f in report.files:
        out.append(("migration files vs the ledger (`_prisma_migrations`)", f"• {bk.esc(f.message)}"))
    for u in report.unrecorded:
        out.append((None, f"• {bk.esc(u.message)}"))
    for group, diffs in report.groups().items():
        for d in diffs:
            way_back = (f"way back: {bk.ticked(bk.cut(' '.join(d.fix_sql.split()), FIX_IN_LINE))}" if d.fix_sql
                        else f"way back: _{bk.esc(d.by_hand or 'write this by hand')}_")
            out.append((group, f"• {bk.esc(d.message)}\n      {way_back}"))
    if report.prisma.status == "drifted":
        out.append((None, f"• schema.prisma vs the migrations: {bk.esc(report.prisma.detail)}"))
    return out


def finding_sections(report: Any, limit: int = MAX_LISTED) -> Blocks:
    """The findings grouped by object ("*table `users`*" and its lines), cut after ``limit`` lines."""
    findings = _finding_lines(report)
    shown, left_out = findings[:limit], len(findings) - limit
    out: Blocks = []
    chunk: list[str] = []
    current: str | None = None
    for group, line in shown:
        heading = [f"*{bk.esc(group)}*"] if group is not None and group != current else []
        current = group if group is not None else current
        if chunk and len("\n".join([*chunk, *heading, line])) > SECTION_BUDGET:
            out.append(bk.section("\n".join(chunk)))
            chunk = [f"*{bk.esc(group)}* (continued)"] if group is not None and not heading else []
        chunk += [*heading, line]
    if left_out > 0:
        chunk.append(f"… {left_out} more: `migrabot drift {report.environment} --json` lists them all")
    if chunk:
        out.append(bk.section("\n".join(chunk)))
    return out


def headline(report: Any) -> str:
    """One line: "prod: in sync", "prod: DRIFTED (3 differences)" or "prod: could not check the schema"."""
    n = report.count()
    if report.status == "in sync":
        return (f"{report.environment}: in sync ({len(report.applied)} applied migration(s), "
                f"{report.expected_objects} objects compared)")
    if report.status == "drifted":
        return f"{report.environment}: DRIFTED ({n} difference{'s' if n != 1 else ''})"
    return f"{report.environment}: could not check the schema"


def drift_message(report: Any, *, origin: str | None = None) -> tuple[str, Blocks]:
    """The whole report (:class:`actions.drift.DriftReport`) as a message."""
    head = headline(report)
    text = f"Drift: {head}"
    out: Blocks = [bk.section(f"{ICON.get(report.status, '')} *Drift check* — {bk.esc(head)}")]
    if report.problem:
        out.append(bk.section(f"Schema not compared: {bk.esc(report.problem)}"))
    out += finding_sections(report)
    notes = [f"note: {bk.esc(n)}" for n in report.notes[:5]]
    if report.prisma.status != "drifted":
        notes.append(f"schema.prisma: {bk.esc(report.prisma.detail)}")
    if report.fix_sql():
        notes.append(f"`migrabot drift {bk.esc(report.environment)} --write-fix prisma/migrations` writes the "
                     "generated statements as a migration to review; nothing is applied without a normal run")
    out.append(bk.context(bk.cut(" · ".join(notes), 2900)))
    when = f"{report.duration:.1f} s"
    out.append(bk.context(f"{origin or f'`/db drift {report.environment}`'} · checked in {when}"))
    return text, bk.fit_blocks(out)


def checklist_failure(report: Any, *, blocking: bool) -> tuple[str, Blocks]:
    """The thread reply when the "Schema matches the migrations" item fails (or warns)."""
    head = headline(report)
    then = ("Run stays locked until the schema matches: fix it (the way back is under each line), then press "
            "Re-check." if blocking else "This environment only warns (`drift_check = \"warn\"`): Run is not held.")
    text = f"Schema check: {head}"
    out: Blocks = [bk.section(f":warning: *Schema matches the migrations?* {bk.esc(head)}. {then}")]
    if report.problem:
        out.append(bk.section(f"Schema not compared: {bk.esc(report.problem)}"))
    out += finding_sections(report, limit=15)
    return text, bk.fit_blocks(out)
