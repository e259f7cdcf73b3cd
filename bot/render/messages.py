"""Every message but the run message: usage, refusals, notices, thread replies, incidents, modals.

Each builder returns ``(fallback text, blocks)``, so a caller posts ``*messages.x(...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actions.humanize import duration, size
from actions.restore import RestoreResult
from bot.render import blocks as bk
from bot.render.dates import when_text
from bot.rules.run_view import RunView

Blocks = list[dict[str, Any]]
CONFIRM_BLOCK = "confirm_input"
CONFIRM_ACTION = "value"


def usage(usage_text: str, problem: str | None = None) -> tuple[str, Blocks]:
    lines = ([f":warning: {problem}", ""] if problem else []) + [usage_text]
    text = "\n".join(lines)
    return text, [bk.section(text)]


def refusal(reason: str) -> tuple[str, Blocks]:
    text = f":no_entry: {reason}"
    return text, [bk.section(text)]


def notice(text: str) -> tuple[str, Blocks]:
    return text, [bk.section(text)]


def lock_held(env: str, holder: dict[str, Any], link: str | None) -> tuple[str, Blocks]:
    where = f" (<{link}|run #{holder['run_id']}>)" if link else f" (run #{holder['run_id']})"
    text = (f":lock: {env} is locked by {bk.user(holder['holder'])} since {holder['since'][:19].replace('T', ' ')} UTC"
            f"{where}. One run per environment at a time: finish or abort that run first.")
    return text, [bk.section(text)]


def status_message(env: str, status: dict[str, Any]) -> tuple[str, Blocks]:
    head = ":white_check_mark: up to date" if status.get("up_to_date") else ":warning: not up to date"
    lines = [f"*Migration status of {env}*: {head}"]
    for key, label in (("applied", "Applied"), ("pending", "Pending"), ("failed", "Failed"),
                       ("modified", "Modified after applying"), ("missing", "Applied but missing locally"),
                       ("rolled_back", "Rolled back")):
        names = status.get(key) or []
        if key == "applied" and names:
            lines.append(f"{label}: {len(names)} (last: `{names[-1]}`)")
        elif names:
            more = f" … and {len(names) - 15} more" if len(names) > 15 else ""
            shown = ", ".join(f"`{n}`" for n in names[:15]) + more
            lines.append(f"{label} ({len(names)}): {shown}")
    non_tx = status.get("non_transactional") or []
    if non_tx:
        lines.append("Runs outside a transaction: " + ", ".join(f"`{n}`" for n in non_tx))
    for f in status.get("failed_details") or []:
        lines.append(f"Failed `{f.get('name')}` started {f.get('started_at')}: fix with "
                     f"`/migrate resolve {env} {f.get('name')} rolled-back` or `applied`")
    text = "\n".join(lines)
    return text, [bk.section(text)]


def plan_message(env: str, pending: list[dict[str, Any]], lint: dict[str, Any]) -> tuple[str, Blocks]:
    if not pending:
        text = f"*Plan for {env}*: nothing pending; the database is up to date."
        return text, [bk.section(text)]
    lines = [f"*Plan for {env}*: {len(pending)} pending migration(s)"]
    by_name = {m["name"]: m for m in lint.get("migrations", [])}
    for m in pending[:20]:
        ml = by_name.get(m["name"], {})
        verdict = ml.get("verdict", "?")
        icon = {"safe": ":large_green_circle:", "risky": ":warning:"}.get(verdict, ":grey_question:")
        tx = "" if m.get("transactional", True) else " (outside a transaction)"
        lines.append(f"{icon} `{m['name']}` — {verdict}{tx}")
        for f in ml.get("findings", [])[:4]:
            lines.append(f"      ◦ {f.get('message', '')} → _{f.get('advice', '')}_")
    if len(pending) > 20:
        lines.append(f"… and {len(pending) - 20} more")
    if lint.get("error"):
        lines.append(f"Lint could not run: {lint['error']}")
    else:
        lines.append("Zero-downtime safe: " + ("yes" if lint.get("zero_downtime_safe") else "*no*"))
    text = "\n".join(lines)
    return text, [bk.section(text)]


def history_message(env: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, Blocks]:
    if not rows:
        text = f"No runs on {env} yet."
        return text, [bk.section(text)]
    lines = [f"*Last runs on {env}*"]
    for r in rows:
        took = ""
        if r.get("result") and r["result"].get("duration") is not None:
            took = f", {bk.duration(r['result']['duration'])}"
        lines.append(f"#{r['id']} {r['kind']} by {bk.user(r['requested_by'])} at "
                     f"{r['created_at'][:16].replace('T', ' ')} UTC: *{r['status']}*{took}")
    text = "\n".join(lines)
    return text, [bk.section(text)]


def migration_sql(name: str, sql: str, *, transactional: bool) -> tuple[str, Blocks]:
    lines = sql.count("\n") + 1
    note = "" if transactional else " — runs statement by statement, outside a transaction"
    head = f"*`{name}/migration.sql`* ({lines} lines{note})"
    body = bk.code(sql, 2900)
    if len(sql) > 2880:
        head += " — cut for Slack; read the whole file in the repository"
    return f"{name}: migration.sql", [bk.section(head), bk.section(body)]


def incident(env: str, run_id: int, failed: str | None, logs: str | None, backup_id: str | None,
             applied: list[str]) -> tuple[str, Blocks]:
    lines = [f":rotating_light: *Migration on {env} failed* (run #{run_id})"]
    if failed:
        lines.append(f"Failed migration: `{failed}`")
    if applied:
        lines.append("Applied before the failure: " + ", ".join(f"`{a}`" for a in applied))
    if backup_id:
        lines.append(f"Database state is preserved in backup `{backup_id}`.")
    lines.append("Decide: fix forward or roll back? (runbook: Incident Response)")
    out = [bk.section("\n".join(lines))]
    if logs:
        out.append(bk.section(bk.code(logs, 2000)))
    out.append(incident_actions(run_id, failed))
    return lines[0], out


def incident_actions(run_id: int, failed_migration: str | None) -> dict[str, Any]:
    elements = [bk.button("Roll back to backup", "incident_rollback", str(run_id), style="danger")]
    if failed_migration:
        elements.append(bk.button("Mark rolled back", "incident_mark_rolled_back", str(run_id)))
    elements.append(bk.button("Fix forward", "incident_fix_forward", str(run_id)))
    return bk.actions(elements, block_id=f"incident:{run_id}")


def _what_migrate(plan: dict[str, Any]) -> str:
    return f"apply {len(plan.get('migrations', []))} migration(s)"


def _what_rollback(plan: dict[str, Any]) -> str:
    return (f"replace the database with backup {plan.get('target')} (data written since then goes into "
            "a safety snapshot)")


def _what_undo(plan: dict[str, Any]) -> str:
    return f"undo migration {plan.get('migration')} with its inverse SQL"


#: What a typed confirmation is about, in words, per kind (others: the kind's title).
CONFIRM_WHAT: dict[str, Callable[[dict[str, Any]], str]] = {
    "migrate": _what_migrate, "rollback": _what_rollback, "undo": _what_undo,
}


def confirm_modal(view: RunView, expected: str) -> dict[str, Any]:
    """The typed confirmation: the user must type ``expected`` (the environment name, or RESTORE).

    On a scheduled run it records the confirmation for the start, so it says when that is.
    """
    describe = CONFIRM_WHAT.get(view.run["kind"])
    what = describe(view.plan) if describe else view.kind.title.lower()
    if view.run.get("scheduled_for") and view.status == "scheduled":
        what += f" at {when_text(view.run['scheduled_for'])}"
    blocks = [
        bk.section(f"You are about to {what} on *{view.env.name}*.\nType *{expected}* to confirm."),
        bk.text_input(CONFIRM_BLOCK, CONFIRM_ACTION, f"Type {expected}", placeholder=expected,
                      max_length=max(len(expected) + 20, 40)),
    ]
    # Cancel on a restore ends that rollback (the runbook's prompt: anything but RESTORE aborts)
    return bk.modal("confirm_run", "Confirm", blocks, submit="Confirm",
                    private_metadata=json.dumps({"run_id": view.id, "expected": expected}),
                    notify_on_close=view.kind.dismiss_cancels)


def progress_detail(text: str) -> tuple[str, Blocks]:
    return text, [bk.section(text)]


def _said(text: str) -> tuple[str, Blocks]:
    return text, [bk.section(text)]


# --- answers to the person who acted ------------------------------------------------------------


def up_to_date(env: str) -> tuple[str, Blocks]:
    return _said(f":white_check_mark: {env} is up to date: no pending migrations.")


def nothing_to_abort(env: str) -> tuple[str, Blocks]:
    return _said(f"No open run on {env}; nothing to abort.")


def abort_at_next_safe_point() -> tuple[str, Blocks]:
    return _said(":hourglass: a migration is being applied right now; the run stops before the next one.")


def starts_by_itself(view: RunView) -> tuple[str, Blocks]:
    at = when_text(view.run.get("scheduled_for"))
    return _said(f":alarm_clock: run #{view.id} starts by itself at {at} once its checklist and approvals "
                 "are complete.")


def no_backups(env: str) -> tuple[str, Blocks]:
    return _said(f"No verified backups of {env} yet. Take one with `migrabot backup {env}` "
                 f"(every `/migrate {env}` run takes one before applying).")


def no_inverse_sql(env: str, note: str | None) -> tuple[str, Blocks]:
    return _said(f":no_entry: {note or 'The last migration has no down.sql or rollback.sql.'}\n"
                 f"Restore a backup instead: `/rollback {env}`.")


def no_longer_blocks(env: str, pid: int) -> tuple[str, Blocks]:
    return _said(f":information_source: pid {pid} no longer blocks anyone on {env} (it finished or ended); "
                 f"nothing to terminate. `/db blockers {env}` lists the current blockers.")


# --- in a run's thread ----------------------------------------------------------------------------


def fix_forward_decided(user: str) -> tuple[str, Blocks]:
    return _said(f":hammer_and_wrench: {bk.user(user)} decided to fix forward. "
                 "Ship a new migration; `/migrate resolve` marks the failed one first.")


def waiting_for_lock(migration: str, env: str, blockers: list[str]) -> tuple[str, Blocks]:
    """A migration retries behind a lock: who blocks it (each blocker once per run)."""
    lines = [f":repeat: `{migration}` waits for a lock; retrying with backoff. Blocked by:"]
    lines += [f"• {b}" for b in blockers]
    lines.append(f"See `/db blockers {env}`.")
    return lines[0], [bk.section("\n".join(lines))]


def interrupted(run_id: int, error: str) -> tuple[str, Blocks]:
    return _said(f":warning: Run #{run_id} was interrupted by a restart: {error}")


def scheduled_start(run_id: int) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Scheduled start: run #{run_id} is starting now.")


def scheduled_start_blocked(run_id: int, missing: str) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Scheduled start of run #{run_id} did not happen: not ready. "
                 f"Missing: {missing}. The run stays open: finish these and press Run, or Abort it.")


def missed_start_reason(run_at: str, late_by: float) -> str:
    return (f"the bot was not running at the scheduled time ({when_text(run_at)}); it did not start "
            f"{duration(late_by)} late. Request a new run for another window.")


def run_expired(run_id: int, reason: str) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Run #{run_id} expired: {reason}")


def schedule_note(needs_confirmation: bool, confirmed: dict[str, Any] | None) -> str:
    """The typed-confirmation part of a line of `/migrate schedule`."""
    if not needs_confirmation:
        return ""
    if confirmed:
        return f"; typed confirmation by {bk.user(confirmed['by'])}"
    return "; *typed confirmation still needed* (Confirm now on the run message)"


def approval_reminder(view: RunView, waited: float) -> tuple[str, Blocks]:
    a = view.approval
    who = " ".join(bk.user(x) for x in view.env.approvers) or "approvers"
    return _said(f":bell: {who}: run #{view.id} on *{view.env.name}* has waited {duration(waited)} for approvals "
                 f"({a.count}/{a.needed}). Approve or reject on the run message; approvals count for "
                 f"{duration(view.env.approval_expiry)}.")


# --- in the environment's channel -------------------------------------------------------------------


def scheduled_report_failed(env: str, error: str) -> tuple[str, Blocks]:
    return _said(f":warning: The scheduled report of {env} could not run: {error}")


def retention_failed(env: str, error: str) -> tuple[str, Blocks]:
    return _said(f":warning: Backup retention on {env} failed: {error}")


# --- step details and results, stored with the run and shown in its message --------------------------


def backup_progress(bytes_written: int, elapsed: float) -> str:
    return f"{size(bytes_written)} written, {duration(elapsed)}"


def backup_done(backup_id: str, size_bytes: int | None) -> str:
    return f"`{backup_id}`, {size(size_bytes)}, verified"


def migrate_summary(applied: list[str], took: float, backup_id: str, verification: str) -> str:
    return (f"{len(applied)} migration(s) applied in {duration(took)}; backup `{backup_id}`; "
            f"verification: {verification}")


def restore_summary(result: RestoreResult) -> str:
    return (f"restored backup `{result.backup_id}` in {duration(result.duration)}; "
            f"safety snapshot `{result.snapshot_id}` holds the data from before; the previous database "
            f"is kept as `{result.previous_database}`; connections were refused for "
            f"{duration(result.unavailable_seconds)}")

