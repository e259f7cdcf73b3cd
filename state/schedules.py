"""Rows of the ``schedules`` table: scheduled run starts and sent approval reminders.

APScheduler keeps its jobs in memory; this table is what survives a restart, and
:func:`bot.scheduler.start` re-creates the jobs from it.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> add_run_start(s, run_id=7, env="staging", run_at="2030-01-01T22:00:00+00:00", created_by="U1")
    'run-7'
    >>> [r["id"] for r in pending_run_starts(s)]
    ['run-7']
    >>> finish(s, "run-7", "fired", "started"), finish(s, "run-7", "fired", "again")
    (True, False)
    >>> mark_once(s, "reminder-7", kind="reminder", env="staging", run_id=7), mark_once(s, "reminder-7",
    ...     kind="reminder", env="staging", run_id=7)
    (True, False)

Statuses: ``pending`` (a run start still to come), then ``fired`` (the run started),
``blocked`` (not ready at its time: what was missing is in ``detail``), ``cancelled``
(aborted or rejected before its time), ``missed`` (the bot was down well past its time);
reminder rows are ``done`` from the start.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from state.store import Store, now_iso

RUN_START = "run_start"


def add_run_start(store: Store, *, run_id: int, env: str, run_at: str, created_by: str) -> str:
    """Record that run ``run_id`` starts at ``run_at`` (ISO with offset); returns the schedule id."""
    schedule_id = f"run-{run_id}"
    with store.lock:
        store.db.table("schedules").upsert({
            "id": schedule_id, "kind": RUN_START, "env": env, "run_id": run_id, "run_at": run_at, "cron": None,
            "created_by": created_by, "created_at": now_iso(), "status": "pending", "detail": "",
        }, pk="id")
    return schedule_id


def get(store: Store, schedule_id: str) -> dict[str, Any] | None:
    rows = list(store.db.table("schedules").rows_where("id = ?", [schedule_id]))
    return rows[0] if rows else None


def pending_run_starts(store: Store) -> list[dict[str, Any]]:
    """Scheduled starts still to come, soonest first."""
    return list(store.db.table("schedules").rows_where("kind = ? AND status = 'pending'", [RUN_START],
                                                 order_by="run_at"))


def finish(store: Store, schedule_id: str, status: str, detail: str = "") -> bool:
    """pending → ``status``, once (compare-and-set: a job firing twice acts once)."""
    with store.lock:
        cursor = store.db.execute("UPDATE schedules SET status = ?, detail = ? WHERE id = ? AND status = 'pending'",
                                  [status, detail, schedule_id])
    return cursor.rowcount == 1


def cancel_for_run(store: Store, run_id: int, detail: str = "") -> list[str]:
    """Cancel the pending start of ``run_id``; returns the ids cancelled (none when it had no schedule)."""
    with store.lock:
        ids = [r["id"] for r in store.db.table("schedules").rows_where("run_id = ? AND status = 'pending'", [run_id])]
        for schedule_id in ids:
            finish(store, schedule_id, "cancelled", detail)
    return ids


def mark_once(store: Store, key: str, *, kind: str, env: str, run_id: int | None = None, detail: str = "") -> bool:
    """Record a one-off event (a reminder sent); False when ``key`` was recorded before."""
    with store.lock:
        try:
            store.db.execute(
                "INSERT INTO schedules (id, kind, env, run_id, created_by, created_at, status, detail) "
                "VALUES (?, ?, ?, ?, 'bot', ?, 'done', ?)", [key, kind, env, run_id, now_iso(), detail])
        except sqlite3.IntegrityError:
            return False
    return True
