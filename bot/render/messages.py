"""Smaller messages: usage, refusals, status, plan, history, SQL in the thread, incidents, modals."""

from __future__ import annotations

import json
from typing import Any

from bot.render import blocks as bk

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


def history_message(env: str, rows: list[dict[str, Any]]) -> tuple[str, Blocks]:
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
    from bot.render.run_message import incident_actions

    out.append(incident_actions(run_id, failed))
    return lines[0], out


def confirm_modal(run_id: int, env: str, what: str, expected: str) -> dict[str, Any]:
    """The typed confirmation: the user must type ``expected`` (the environment name, or RESTORE)."""
    blocks = [
        bk.section(f"You are about to {what} on *{env}*.\nType *{expected}* to confirm."),
        bk.text_input(CONFIRM_BLOCK, CONFIRM_ACTION, f"Type {expected}", placeholder=expected,
                      max_length=max(len(expected) + 20, 40)),
    ]
    # Cancel on a restore ends that rollback (the runbook's prompt: anything but RESTORE aborts)
    return bk.modal("confirm_run", "Confirm", blocks, submit="Confirm",
                    private_metadata=json.dumps({"run_id": run_id, "expected": expected}),
                    notify_on_close=expected == "RESTORE")


def progress_detail(text: str) -> tuple[str, Blocks]:
    return text, [bk.section(text)]
