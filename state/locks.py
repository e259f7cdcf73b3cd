"""One lock per environment: never two runs (migration or rollback) on one database at once.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> acquire(s, "prod", run_id=1, holder="U1") is None
    True
    >>> acquire(s, "prod", run_id=2, holder="U2")["holder"]
    'U1'
"""

from __future__ import annotations

from typing import Any

from state.store import Store, now_iso


def acquire(store: Store, env: str, *, run_id: int, holder: str) -> dict[str, Any] | None:
    """Take the lock; return None when taken, else the current holder's row.

    The table's primary key (``env``) decides between replicas asking at the same moment.
    """
    with store.lock:
        if store.execute("INSERT INTO locks (env, run_id, holder, since) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (env) DO NOTHING", [env, run_id, holder, now_iso()]) == 1:
            return None
        held = holder_of(store, env)
    # freed between the insert and the read (its run just ended): try again
    return held if held is not None else acquire(store, env, run_id=run_id, holder=holder)


def holder_of(store: Store, env: str) -> dict[str, Any] | None:
    return store.fetch_one("SELECT * FROM locks WHERE env = ?", [env])


def all_locks(store: Store) -> list[dict[str, Any]]:
    return store.fetch_all("SELECT * FROM locks ORDER BY env")


def release_orphaned(store: Store, open_statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """Free the locks whose run is gone or no longer in ``open_statuses``; returns the freed rows.

    A run's own end frees its lock (:func:`state.runs.transition`); this repairs state files
    written before that was one transaction, and runs deleted by hand.
    """
    marks = ", ".join("?" for _ in open_statuses)
    where = f"run_id NOT IN (SELECT id FROM runs WHERE status IN ({marks}))"
    with store.transaction():
        freed = store.fetch_all(f"SELECT * FROM locks WHERE {where} ORDER BY env", list(open_statuses))
        store.execute(f"DELETE FROM locks WHERE {where}", list(open_statuses))
    return freed
