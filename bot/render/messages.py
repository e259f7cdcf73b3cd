"""Every message but the run message: usage, refusals, notices, thread replies, incidents, modals.

Each builder returns ``(fallback text, blocks)``, so a caller posts ``*messages.x(...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actions.humanize import duration
from actions.restore import RestoreResult
from bot.render import blocks as bk
from bot.render.dates import when_text
from bot.rules.run_view import RunView

Blocks = list[dict[str, Any]]
CONFIRM_BLOCK = "confirm_input"
CONFIRM_ACTION = "value"


def usage(usage_text: str, problem: str | None = None) -> tuple[str, Blocks]:
    lines = ([f":warning: {bk.esc(problem)}", ""] if problem else []) + [usage_text]  # problem quotes what was typed
    text = "\n".join(lines)
    return text, [bk.section(text)]


def refusal(reason: str) -> tuple[str, Blocks]:
    text = f":no_entry: {bk.esc(reason)}"  # reasons carry error texts from servers and files
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
            lines.append(f"{label}: {len(names)} (last: {bk.ticked(names[-1])})")
        elif names:
            more = f" … and {len(names) - 15} more" if len(names) > 15 else ""
            shown = ", ".join(bk.ticked(n) for n in names[:15]) + more
            lines.append(f"{label} ({len(names)}): {shown}")
    non_tx = status.get("non_transactional") or []
    if non_tx:
        lines.append("Runs outside a transaction: " + ", ".join(bk.ticked(n) for n in non_tx))
    for f in status.get("failed_details") or []:
        lines.append(f"Failed {bk.ticked(f.get('name'))} started {bk.esc(f.get('started_at'))}: fix with "
                     f"`/migrate resolve {env} {bk.esc(f.get('name'))} rolled-back` or `applied`")
    for r in status.get("running") or []:  # an unfinished row whose session holds the migration lock
        lines.append(f"Still running {bk.ticked(r.get('name'))} in pid {bk.esc(r.get('pid'))}: not failed; "
                     f"`/migrate status {env}` again once it ends")
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
        lines.append(f"{icon} {bk.ticked(m['name'])} — {bk.esc(verdict)}{tx}")
        for f in ml.get("findings", [])[:4]:
            lines.append(f"      ◦ {bk.esc(f.get('message', ''))} → _{bk.esc(f.get('advice', ''))}_")
    if len(pending) > 20:
        lines.append(f"… and {len(pending) - 20} more")
    if lint.get("error"):
        lines.append(f"Lint could not run: {bk.esc(lint['error'])}")
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
    head = f"*`{bk.esc(name)}/migration.sql`* ({lines} lines{note})"
    body = bk.code(sql, 2900)
    if len(bk.esc(sql)) > 2880:
        head += " — cut for Slack; read the whole file in the repository"
    return f"{bk.esc(name)}: migration.sql", [bk.section(head), bk.section(body)]


#: How much SQL review goes in one thread reply: Slack allows about one message per second per
#: channel (https://api.slack.com/docs/rate-limits), so several migrations share a message, kept
#: well under 50 blocks and short enough to avoid msg_blocks_too_long on long messages.
SQL_PER_MESSAGE = 8
SQL_CHARS_PER_MESSAGE = 12_000


def migrations_sql(items: Sequence[tuple[str, str, bool]]) -> list[tuple[str, Blocks]]:
    """The SQL of several migrations ``(name, sql, transactional)``, grouped into as few replies as fit.

    >>> [len(b) for _, b in migrations_sql([("a", "SELECT 1;", True)] * 9)]
    [16, 2]
    """
    out: list[tuple[str, Blocks]] = []
    names: list[str] = []
    blocks: Blocks = []
    size = 0
    for name, sql, transactional in items:
        _, pair = migration_sql(name, sql, transactional=transactional)
        pair_size = sum(len(b["text"]["text"]) for b in pair)
        if names and (len(names) >= SQL_PER_MESSAGE or size + pair_size > SQL_CHARS_PER_MESSAGE):
            out.append((_sql_text(names), blocks))
            names, blocks, size = [], [], 0
        names.append(name)
        blocks += pair
        size += pair_size
    if names:
        out.append((_sql_text(names), blocks))
    return out


def _sql_text(names: list[str]) -> str:
    if len(names) == 1:
        return f"{bk.esc(names[0])}: migration.sql"
    return f"SQL of {len(names)} migrations: {bk.esc(names[0])} … {bk.esc(names[-1])}"


def slack_delayed(retries: int, waited: float) -> tuple[str, Blocks]:
    """Said in a run's thread when Slack's rate limits held the bot's messages back."""
    return _said(f":snail: Slack's rate limits delayed this run's messages: {retries} answer(s) of 429 "
                 f"(\"too many requests\"), each retried after the wait Slack asked for "
                 f"({duration(waited)} in all); no message was lost.")


def incident(env: str, run_id: int, failed: str | None, logs: str | None, backup_id: str | None,
             applied: list[str]) -> tuple[str, Blocks]:
    lines = [f":rotating_light: *Migration on {env} failed* (run #{run_id})"]
    if failed:
        lines.append(f"Failed migration: {bk.ticked(failed)}")
    if applied:
        lines.append("Applied before the failure: " + ", ".join(bk.ticked(a) for a in applied))
    if backup_id:
        lines.append(f"Database state is preserved in backup {bk.ticked(backup_id)}.")
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
    return (f"replace the database with backup {bk.ticked(plan.get('target'))} (data written since then goes into "
            "a safety snapshot)")


def _what_undo(plan: dict[str, Any]) -> str:
    return f"undo migration {bk.ticked(plan.get('migration'))} with its inverse SQL"


#: What a typed confirmation is about, in words, per kind (others: the kind's title).
CONFIRM_WHAT: dict[str, Callable[[dict[str, Any]], str]] = {
    "migrate": _what_migrate, "rollback": _what_rollback, "undo": _what_undo,
}


def confirm_modal(view: RunView, expected: str, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The typed confirmation: the user must type ``expected`` (the environment name, or RESTORE).

    On a scheduled run it records the confirmation for the start, so it says when that is.
    ``notes`` are what the person must know before typing (whom a restore disconnects, a backup
    from another place), built by :func:`sessions_note` and :func:`other_origin_note`.
    """
    describe = CONFIRM_WHAT.get(view.run["kind"])
    what = describe(view.plan) if describe else view.kind.title.lower()
    if view.run.get("scheduled_for") and view.status == "scheduled":
        what += f" at {when_text(view.run['scheduled_for'])}"
    blocks = [
        bk.section("\n".join([f"You are about to {what} on *{view.env.name}*.", *notes,
                               f"Type *{expected}* to confirm."])),
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


def not_in_channel(where: str, error: str) -> tuple[str, Blocks]:
    """The bot cannot post in the conversation (``not_in_channel`` / ``channel_not_found``)."""
    here = "this conversation" if not where else bk.channel(where)
    return _said(f":wave: I am not a member of {here}, so I cannot post the run message there (Slack said "
                 f"`{bk.esc(error)}`); nothing was started. Invite me with `/invite @migrabot` in that channel, "
                 "then run the command again.")


def run_posted_in(channel_id: str, link: str | None) -> tuple[str, Blocks]:
    """The run message went to the environment's channel, not where the command was typed."""
    opened = f" (<{link}|open it>)" if link else ""
    return _said(f":mega: The run message is in {bk.channel(channel_id)}{opened}, this environment's channel: "
                 "approve and tick there.")


def reactions_will_not_count(where: str, error: str | None) -> tuple[str, Blocks]:
    """Said in a run's thread when the bot could not join the channel it posted in."""
    why = f" (Slack said `{bk.esc(error)}`)" if error else ""
    return _said(f":warning: I could not join {bk.channel(where)}{why}, so reactions here do not reach me: "
                 "approve and reject with the buttons, or `/invite @migrabot` to this channel.")


def stale_checklist(ticked: list[str]) -> tuple[str, Blocks]:
    """The person clicked a checklist that others had changed since their client showed it."""
    now = ", ".join(ticked) or "nothing"
    return _said(f":arrows_counterclockwise: Someone changed the checklist after your view of it was drawn. "
                 f"Only your own change was applied; ticked now: {now}. The message shows everyone's ticks.")


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
    return _said(f":no_entry: {bk.esc(note or 'The last migration has no down.sql or rollback.sql.')}\n"
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
    lines = [f":repeat: {bk.ticked(migration)} waits for a lock; retrying with backoff. Blocked by:"]
    lines += [f"• {bk.esc(b)}" for b in blockers]
    lines.append(f"See `/db blockers {env}`.")
    return lines[0], [bk.section("\n".join(lines))]


def interrupted(run_id: int, error: str) -> tuple[str, Blocks]:
    return _said(f":warning: Run #{run_id} was interrupted by a restart: {bk.stored(error)}")


def followed_up(run_id: int, name: str, detail: str, env: str) -> tuple[str, Blocks]:
    return _said(f":mag: Run #{run_id}: `{bk.esc(name)}` was {bk.stored(detail)}. "
                 f"`/migrate {env}` continues with what is left.")


def scheduled_start(run_id: int) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Scheduled start: run #{run_id} is starting now.")


def scheduled_start_blocked(run_id: int, missing: str) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Scheduled start of run #{run_id} did not happen: not ready. "
                 f"Missing: {missing}. The run stays open: finish these and press Run, or Abort it.")


def missed_start_reason(run_at: str, late_by: float) -> str:
    return (f"the bot was not running at the scheduled time ({when_text(run_at)}); it did not start "
            f"{duration(late_by)} late. Request a new run for another window.")


def run_expired(run_id: int, reason: str) -> tuple[str, Blocks]:
    return _said(f":alarm_clock: Run #{run_id} expired: {bk.stored(reason)}")


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
    return _said(f":warning: The scheduled report of {env} could not run: {bk.esc(error)}")


def retention_failed(env: str, error: str) -> tuple[str, Blocks]:
    return _said(f":warning: Backup retention on {env} failed: {bk.esc(error)}")


# --- step details and results, stored with the run and shown in its message --------------------------


def migrate_summary(applied: list[str], took: float, backup_id: str, verification: str) -> str:
    return (f"{len(applied)} migration(s) applied in {duration(took)}; backup `{backup_id}`; "
            f"verification: {verification}")


def restore_summary(result: RestoreResult) -> str:
    return (f"restored backup `{result.backup_id}` in {duration(result.duration)}; "
            f"safety snapshot `{result.snapshot_id}` holds the data from before; the previous database "
            f"is kept as `{result.previous_database}`; connections were refused for "
            f"{duration(result.unavailable_seconds)}")


def sessions_note(described: str | None, error: str | None = None) -> str:
    """What the swap of a restore ends, for its confirmation (said before, not found out after)."""
    if described is None:
        return f":warning: Could not count the sessions the swap will end ({bk.esc(error)}); it ends every one."
    return (f":electric_plug: The swap ends {bk.esc(described)} on the current database; they reconnect to the "
            "restored one.")


def other_origin_note(origin: str, env: str) -> str:
    return f":warning: *{bk.esc(origin)}.* Typing RESTORE puts that data into *{bk.esc(env)}*."
