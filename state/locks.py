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
    rows = list(store.db["locks"].rows_where("env = ?", [env]))
    return rows[0] if rows else None


def all_locks(store: Store) -> list[dict[str, Any]]:
    return list(store.db["locks"].rows)


def release(store: Store, env: str, run_id: int) -> bool:
    """Release the lock if ``run_id`` holds it."""
    with store.lock:
        cursor = store.db.execute("DELETE FROM locks WHERE env = ? AND run_id = ?", [env, run_id])
    return cursor.rowcount > 0
