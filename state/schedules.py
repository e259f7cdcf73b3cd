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

from typing import Any

from state.store import Store, now_iso

RUN_START = "run_start"


def add_run_start(store: Store, *, run_id: int, env: str, run_at: str, created_by: str) -> str:
    """Record that run ``run_id`` starts at ``run_at`` (ISO with offset); returns the schedule id."""
    schedule_id = f"run-{run_id}"
    store.upsert("schedules", {
        "id": schedule_id, "kind": RUN_START, "env": env, "run_id": run_id, "run_at": run_at, "cron": None,
        "created_by": created_by, "created_at": now_iso(), "status": "pending", "detail": "",
    }, pk=("id",))
    return schedule_id


def get(store: Store, schedule_id: str) -> dict[str, Any] | None:
    return store.fetch_one("SELECT * FROM schedules WHERE id = ?", [schedule_id])


def pending_run_starts(store: Store) -> list[dict[str, Any]]:
    """Scheduled starts still to come, soonest first."""
    return store.fetch_all("SELECT * FROM schedules WHERE kind = ? AND status = 'pending' ORDER BY run_at, id",
                           [RUN_START])


def finish(store: Store, schedule_id: str, status: str, detail: str = "") -> bool:
    """pending → ``status``, once (compare-and-set: a job firing twice acts once)."""
    return store.execute("UPDATE schedules SET status = ?, detail = ? WHERE id = ? AND status = 'pending'",
                         [status, detail, schedule_id]) == 1


def cancel_for_run(store: Store, run_id: int, detail: str = "") -> list[str]:
    """Cancel the pending start of ``run_id``; returns the ids cancelled (none when it had no schedule)."""
    ids = [r["id"] for r in store.fetch_all("SELECT id FROM schedules WHERE run_id = ? AND status = 'pending'",
                                            [run_id])]
    return [schedule_id for schedule_id in ids if finish(store, schedule_id, "cancelled", detail)]


def mark_once(store: Store, key: str, *, kind: str, env: str, run_id: int | None = None, detail: str = "") -> bool:
    """Record a one-off event (a reminder sent); False when ``key`` was recorded before."""
    return store.execute(
        "INSERT INTO schedules (id, kind, env, run_id, created_by, created_at, status, detail) "
        "VALUES (?, ?, ?, ?, 'bot', ?, 'done', ?) ON CONFLICT (id) DO NOTHING",
        [key, kind, env, run_id, now_iso(), detail]) == 1
