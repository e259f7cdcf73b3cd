"""One lock per environment: never two runs (migration or rollback) on one database at once.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> acquire(s, "prod", run_id=1, holder="U1") is None
    True
    >>> acquire(s, "prod", run_id=2, holder="U2")["holder"]
    'U1'
"""

from __future__ import annotations

import sqlite3
from typing import Any

from state.store import Store, now_iso


def acquire(store: Store, env: str, *, run_id: int, holder: str) -> dict[str, Any] | None:
    """Take the lock; return None when taken, else the current holder's row."""
    with store.lock:
        try:
            store.db.execute("INSERT INTO locks (env, run_id, holder, since) VALUES (?, ?, ?, ?)",
                             [env, run_id, holder, now_iso()])
            return None
        except sqlite3.IntegrityError:
            return holder_of(store, env)


def holder_of(store: Store, env: str) -> dict[str, Any] | None:
    rows = list(store.db.table("locks").rows_where("env = ?", [env]))
    return rows[0] if rows else None


def all_locks(store: Store) -> list[dict[str, Any]]:
    return list(store.db.table("locks").rows)


def release_orphaned(store: Store, open_statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """Free the locks whose run is gone or no longer in ``open_statuses``; returns the freed rows.

    A run's own end frees its lock (:func:`state.runs.transition`); this repairs state files
    written before that was one transaction, and runs deleted by hand.
    """
    marks = ", ".join("?" for _ in open_statuses)
    where = f"run_id NOT IN (SELECT id FROM runs WHERE status IN ({marks}))"
    with store.lock:
        freed = list(store.db.table("locks").rows_where(where, list(open_statuses)))
        store.db.execute(f"DELETE FROM locks WHERE {where}", list(open_statuses))
    return freed
