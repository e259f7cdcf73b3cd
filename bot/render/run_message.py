"""The run message: one per run, re-rendered from state on every change (``chat.update``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.render import blocks as bk
from bot.render.dates import slack_date
from bot.render.impact import impact_tag
from bot.render.messages import incident_actions
from bot.render.rehearsal import rehearsal_lines, verdict_tag
from bot.rules import checklist
from bot.rules.kinds import KINDS
from bot.rules.run_view import RunView, chosen_backup
from state import runs
from state.runs import RunStatus

STATUS_ICON = {"pass": ":white_check_mark:", "na": ":heavy_minus_sign:", "fail": ":x:", "warn": ":warning:",
               "manual": ":white_large_square:", "pending": ":hourglass_flowing_sand:"}
STEP_ICON = {"pending": ":white_circle:", "running": ":hourglass_flowing_sand:", "done": ":white_check_mark:",
             "failed": ":x:", "skipped": ":heavy_minus_sign:", "aborted": ":no_entry_sign:",
             "retrying": ":repeat:", "unknown": ":grey_question:"}
RUN_STATUS = {"awaiting": "waiting for checklist and approvals", "scheduled": "scheduled",
              "running": "running", "succeeded": "succeeded", "failed": "FAILED", "aborted": "aborted",
              "rejected": "rejected", "expired": "expired", "interrupted": "interrupted by a restart",
              "cancelled": "cancelled"}
MAX_LISTED = 12


def render_run(view: RunView) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of a run message."""
    run = view.run
    title = f"{KINDS[run['kind']].title}: {view.env.name}"
    text = f"{title} requested by <@{run['requested_by']}> — {status_text(view)}"
    out: list[dict[str, Any]] = [bk.header(title)]
    out += _summary(view)
    if view.kind.checklist and (view.status in runs.WAITING or view.run.get("checks")):
        out += _checklist(view)
    if view.approval.needed or view.approval.rejections:
        out += _approvals(view)
    out += _progress(view)
    out += _result(view)
    out += _controls(view)
    out.append(bk.context(f"Run #{view.id} · {view.env.name} · status: {status_text(view)}"))
    return text, bk.fit_blocks(out)


def status_text(view: RunView) -> str:
    """The run's status in words; what "awaiting" waits for depends on the kind of run."""
    if view.ready:
        return "ready to run"
    if view.status is RunStatus.AWAITING and not view.kind.checklist:
        if not view.target_chosen:
            return "waiting for a backup to be chosen"
        return "waiting for approvals" if view.approval.needed else "ready"
    return RUN_STATUS.get(view.status, view.status)


def _summary(view: RunView) -> list[dict[str, Any]]:
    plan = view.plan
    lines = [f"Requested by {bk.user(view.run['requested_by'])}"]
    if view.kind.needs_target:
        return _rollback_summary(view, lines)
    lines += KIND_LINES.get(view.run["kind"], lambda _view: [])(view)
    for note in plan.get("notes", []):
        lines.append(bk.stored(note))
    if view.run.get("scheduled_for") and view.status is RunStatus.SCHEDULED:
        lines += scheduled_lines(view)
    result = [bk.section("\n".join(lines))]
    advice = _lint_advice(plan)
    if advice:
        result.append(bk.section(advice))
    return result


def _migrate_lines(view: RunView) -> list[str]:
    plan = view.plan
    migrations = plan.get("migrations", [])
    lint = {m["name"]: m for m in (plan.get("lint") or {}).get("migrations", [])}
    lines: list[str] = []
    if not migrations:
        lines.append("No pending migrations: the database is up to date.")
    else:
        lines.append(f"*{len(migrations)} pending migration{'s' if len(migrations) != 1 else ''}* "
                     "(SQL in the thread):")
        for m in migrations[:MAX_LISTED]:
            verdict = lint.get(m["name"], {}).get("verdict")
            tag = {"safe": " — :large_green_circle: safe", "risky": " — :warning: risky"}.get(verdict or "", "")
            extra = " (runs outside a transaction)" if not m.get("transactional", True) else ""
            measured = verdict_tag(plan, m["name"]) or impact_tag(plan, m["name"])  # a fresh rehearsal first
            lines.append(f"• {bk.ticked(m['name'])}{tag}{extra}{measured}")
        if len(migrations) > MAX_LISTED:
            lines.append(f"… and {len(migrations) - MAX_LISTED} more")
        lint_info = plan.get("lint") or {}
        if lint_info.get("error"):
            lines.append(f"Lint could not run: {bk.esc(lint_info['error'])}")
        elif lint_info:
            safe = "yes" if lint_info.get("zero_downtime_safe") else "*no*"
            lines.append(f"Zero-downtime safe: {safe}")
        lines += rehearsal_lines(plan)
    return lines


def _undo_lines(view: RunView) -> list[str]:
    plan = view.plan
    lines: list[str] = []
    down = plan.get("down_file") or "down.sql"
    lines.append(f"Undo the last applied migration {bk.ticked(plan.get('migration'))} with its {bk.ticked(down)} "
                 "(shown in the thread), then remove its `_prisma_migrations` row so it is pending again.")
    lint_info = plan.get("lint") or {}
    if lint_info.get("error"):
        lines.append(f"Lint could not run: {bk.esc(lint_info['error'])}")
    elif lint_info:
        lines.append("Zero-downtime safe: " + ("yes" if lint_info.get("zero_downtime_safe") else "*no*"))
    lines.append("A verified backup is taken first.")
    return lines


def _resolve_lines(view: RunView) -> list[str]:
    plan = view.plan
    return [f"Mark {bk.ticked(plan.get('migration'))} as *{bk.esc(plan.get('as'))}* in `_prisma_migrations` "
            "(Prisma's `migrate resolve`)."]


def _rollback_summary(view: RunView, lines: list[str]) -> list[dict[str, Any]]:
    """The backup menu and, once one is chosen, what restoring it undoes."""
    plan = view.plan
    out = [bk.section("\n".join(lines))]
    if plan.get("target"):
        out.append(bk.section(describe_impact(plan), block_id=f"impact:{view.id}"))
    if view.status is RunStatus.AWAITING:
        options = [backup_option(b) for b in plan.get("backups", [])]
        chosen = next((o for o in options if o["value"] == plan.get("target")), None)
        text = "*Choose the backup to restore* (verified backups, newest first)"
        if plan.get("more"):
            text += f"; {plan['more']} older ones are not listed"
        out.append(bk.section(text, block_id=f"target:v{view.plan.get('input_version') or 0}:{view.id}",
                              accessory=bk.static_select("choose_backup", "Choose a backup", options, chosen)))
    return out


def backup_option(b: dict[str, Any]) -> dict[str, Any]:
    age = (datetime.now(UTC) - datetime.fromisoformat(b["created_at"])).total_seconds()
    kind = " (pre-restore snapshot)" if b.get("kind") == "pre-restore" else ""
    label = f"{b['id']} · {bk.duration(age)} ago · {bk.size(b.get('size_bytes'))}{kind}"
    last = b.get("last_migration") or "no migrations"
    return bk.option(label, b["id"], description=f"last: {last}")


def _lint_advice(plan: dict[str, Any]) -> str:
    lines = []
    for m in (plan.get("lint") or {}).get("migrations", []):
        for f in m.get("findings", [])[:3]:
            if f.get("category") == "risky" or m.get("verdict") == "risky":
                lines.append(f"• {bk.ticked(m['name'])}: {bk.esc(f.get('message', ''))} → "
                             f"_{bk.esc(f.get('advice', ''))}_")
    if not lines:
        return ""
    return "*Runbook advice for risky operations:*\n" + "\n".join(lines[:10])


def _checklist(view: RunView) -> list[dict[str, Any]]:
    checks, ticks = view.checks, view.ticks
    done, total = checklist.summary(checks, ticks)
    lines = [f"*Pre-migration checklist* ({done}/{total})"]
    manual_options, selected = [], []
    for item in checklist.items_for(checks):
        check = checks.get(item.key, {"status": "pending", "reason": "checking…"})
        status = check["status"]
        tick = ticks.get(item.key)
        if status == "manual":
            if tick and tick.get("checked"):
                icon, who = ":ballot_box_with_check:", f" — ticked by {bk.user(tick['by'])}"
            else:
                icon, who = STATUS_ICON["manual"], ""
            lines.append(f"{icon} {item.label}: {bk.stored(check['reason'])}{who}")
            opt = bk.option(item.label, item.key)
            manual_options.append(opt)
            if tick and tick.get("checked"):
                selected.append(opt)
        else:
            by = " (bot)" if status in ("pass", "na") else ""
            lines.append(f"{STATUS_ICON.get(status, '')} {item.label}: {bk.stored(check.get('reason', ''))}{by}")
    out = [bk.section("\n".join(lines), block_id=f"checklist_text:{view.id}")]
    if manual_options and view.status in runs.WAITING:
        # a new block_id per version: clients keep their own ticks for an unchanged one
        version = view.plan.get("input_version") or 0
        out.append(bk.actions([bk.checkboxes("checklist", manual_options, selected)],
                              block_id=f"checklist:v{version}:{view.id}"))
    return out


def _approvals(view: RunView) -> list[dict[str, Any]]:
    a = view.approval
    lines = [f"*Approvals* ({a.count}/{a.needed})"]
    for v in a.approvals:
        lines.append(f":white_check_mark: {bk.user(v['user'])} approved ({v['via']}, {v['at'][11:19]} UTC)")
    for v in a.rejections:
        lines.append(f":x: {bk.user(v['user'])} rejected ({v['via']}, {v['at'][11:19]} UTC)")
    for v in a.expired:
        lines.append(f":hourglass: {bk.user(v['user'])}'s approval expired: approve again")
    if view.status in runs.WAITING:
        who = ", ".join(bk.user(x) for x in view.env.approvers) or "anyone"
        self_note = "" if view.env.allow_self_approval else "; the requester cannot approve"
        lines.append(f"_Approvers: {who}{self_note}. Approve with the button or :white_check_mark:, "
                     f"reject with :x:. {expiry_note(view)}_")
    out = [bk.section("\n".join(lines), block_id=f"approvals_text:{view.id}")]
    if view.status in runs.WAITING:
        out.append(bk.actions([
            bk.button("Approve", "approve", str(view.id), style="primary"),
            bk.button("Reject", "reject", str(view.id), style="danger"),
        ], block_id=f"approvals:{view.id}"))
    return out


def _progress(view: RunView) -> list[dict[str, Any]]:
    if not view.steps:
        return []
    lines = ["*Progress*"]
    for s in view.steps:
        icon = STEP_ICON.get(s["status"], "")
        took = f" ({bk.duration(s['duration'])})" if s.get("duration") is not None else ""
        detail = f" — {bk.stored(s['detail'])}" if s.get("detail") else ""
        lines.append(f"{icon} {bk.stored(s['label'])}{took}{detail}")
    return [bk.section("\n".join(lines), block_id=f"progress:{view.id}")]


def _result(view: RunView) -> list[dict[str, Any]]:
    run = view.run
    result = run.get("result") or {}
    if view.status is RunStatus.SUCCEEDED and result.get("summary"):
        return [bk.section(f":tada: *Succeeded.* {bk.stored(result['summary'])}", block_id=f"result:{view.id}")]
    if view.status in runs.FINAL and view.status is not RunStatus.SUCCEEDED:
        reason = run.get("error") or result.get("summary") or ""
        icon = ":rotating_light:" if view.status is RunStatus.FAILED else ":no_entry_sign:"
        text = f"{icon} *{RUN_STATUS[view.status].capitalize()}.* {bk.stored(reason)}"
        if run.get("decision"):
            text += f"\nDecision: {bk.stored(run['decision'])}"
        return [bk.section(text, block_id=f"result:{view.id}")]
    return []


def _controls(view: RunView) -> list[dict[str, Any]]:
    elements = []
    if view.ready:
        elements.append(bk.button(view.kind.run_label, "run", str(view.id), style="primary"))
    elements += scheduled_controls(view)
    if view.abortable:
        label = "Cancel schedule" if view.status is RunStatus.SCHEDULED else "Abort"
        elements.append(bk.button(label, "abort", str(view.id), style="danger"))
    if view.status is RunStatus.AWAITING and any(c.get("status") == "fail" for c in view.checks.values()):
        elements.append(bk.button("Re-check", "recheck", str(view.id)))
    if view.status in runs.WAITING and view.run["kind"] == "migrate" and view.plan.get("migrations"):
        elements.append(bk.button(":test_tube: Rehearse", "rehearse", str(view.id)))
    out = []
    if view.status is RunStatus.AWAITING and not view.ready:
        missing = view.missing()
        if missing:
            out.append(bk.context("Run unlocks when these are done: " + "; ".join(missing)))
    if elements:
        out.append(bk.actions(elements, block_id=f"controls:{view.id}"))
    if view.status is RunStatus.FAILED and view.kind.incident_on_failure and not view.run.get("decision"):
        out.append(incident_actions(view.id, (view.run.get("result") or {}).get("failed_migration")))
    return out


# --- terminate runs and scheduled runs (the /db and scheduler issue) -------------------------------------


def terminate_lines(view: RunView) -> list[str]:
    """What a terminate run ends: the session as it was when the button was pressed."""
    p = view.plan
    xact = f", transaction open {bk.duration(p['xact_age'])}" if p.get("xact_age") is not None else ""
    blocks = ", ".join(str(x) for x in p.get("blocks", [])) or "?"
    return [f"Terminate session *pid {bk.esc(p.get('pid'))}* on database {bk.ticked(p.get('db'))}: user "
            f"{bk.ticked(p.get('user'))}, app {bk.ticked(p.get('application') or '—')}, "
            f"{bk.esc(p.get('state') or 'unknown state')}{xact}; it blocks pid {bk.esc(blocks)}.",
            bk.code(p.get("query") or "", 900),
            "Its open transaction is rolled back and its client disconnected (`pg_terminate_backend`)."]


def scheduled_lines(view: RunView) -> list[str]:
    """"Scheduled for …", what must be ready by then, and the typed confirmation recorded ahead."""
    lines = [f":alarm_clock: *Scheduled for {slack_date(view.run['scheduled_for'] or '')}.* It starts then only if the "
             "checklist and approvals are complete; Cancel schedule (Abort) ends it."]
    if view.requirements.typed_word:
        confirmed = view.plan.get("confirmed")
        lines.append(f":keyboard: Typed confirmation recorded by {bk.user(confirmed['by'])}." if confirmed else
                     ":keyboard: Needs the typed confirmation *before* its time: press Confirm now.")
    return lines


def scheduled_controls(view: RunView) -> list[dict[str, Any]]:
    if view.status is RunStatus.SCHEDULED and view.requirements.typed_word and not view.plan.get("confirmed"):
        return [bk.button(":keyboard: Confirm now", "run", str(view.id), style="primary")]
    return []


def expiry_note(view: RunView) -> str:
    """How long an approval counts (``approval_expiry``): a scheduled run needs them fresh at its start."""
    note = f"Approvals count for {bk.duration(view.env.approval_expiry)}"
    if view.status is RunStatus.SCHEDULED:
        return note + ": approve close enough to the start."
    return note + "."


def describe_impact(plan: dict[str, Any]) -> str:
    """The restore's consequences in words, for the run message."""
    impact = plan.get("impact") or {}
    lines = [f"Restoring {bk.ticked(plan['target'])} (taken {bk.duration(impact.get('age_seconds'))} ago):"]
    chosen = chosen_backup(plan)
    if chosen.get("origin"):
        lines.append(f"• :warning: {bk.esc(chosen['origin'])}: restoring it puts that data into this environment")
    lines.append("• data written since then is saved in a safety snapshot taken first, not lost")
    undone = impact.get("undone_migrations")
    if undone:
        more = f" … and {len(undone) - 10} more" if len(undone) > 10 else ""
        shown = ", ".join(bk.ticked(n) for n in undone[:10]) + more
        lines.append(f"• migrations applied since then are undone: {shown}")
    elif undone is not None:
        lines.append("• no migration was applied since then")
    if impact.get("error"):
        lines.append(f"• {bk.esc(impact['error'])}")
    lines.append("• the current database is kept under another name until retention removes it")
    return "\n".join(lines)


#: The summary lines of each kind that has its own (a restore's is :func:`_rollback_summary`).
KIND_LINES: dict[str, Callable[[RunView], list[str]]] = {
    "migrate": _migrate_lines,
    "undo": _undo_lines,
    "resolve": _resolve_lines,
    "terminate": terminate_lines,
}
