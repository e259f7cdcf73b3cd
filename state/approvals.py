"""Approvals and rejections of a run, by button or reaction; at most one live vote per person.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> vote(s, 1, "U1", "approve", via="button")
    True
    >>> vote(s, 1, "U1", "approve", via="reaction")  # the same person again: no change
    False
    >>> [a["user"] for a in live(s, 1)]
    ['U1']
"""

from __future__ import annotations

from typing import Any

from state.store import Store, now_iso


def live(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Votes not withdrawn, oldest first."""
    return store.fetch_all("SELECT * FROM approvals WHERE run_id = ? AND withdrawn_at IS NULL ORDER BY id", [run_id])


def vote(store: Store, run_id: int, user: str, decision: str, *, via: str) -> bool:
    """Record ``decision`` ("approve" or "reject"); a changed mind replaces the earlier vote.

    Returns False when the person already has this same live vote. The read and the write are
    one transaction that holds the run's row, so a button and a reaction reaching two replicas
    at once count once.
    """
    with store.transaction(lock_row=("runs", run_id)):
        current = [v for v in live(store, run_id) if v["user"] == user]
        if current and current[-1]["decision"] == decision:
            return False
        stamp = now_iso()
        for v in current:
            store.execute("UPDATE approvals SET withdrawn_at = ? WHERE id = ?", [stamp, v["id"]])
        store.execute('INSERT INTO approvals (run_id, "user", decision, via, at) VALUES (?, ?, ?, ?, ?)',
                      [run_id, user, decision, via, stamp])
    return True


def withdraw(store: Store, run_id: int, user: str, decision: str) -> bool:
    """Withdraw a person's live vote of ``decision`` (a removed reaction)."""
    return store.execute(
        'UPDATE approvals SET withdrawn_at = ? WHERE run_id = ? AND "user" = ? AND decision = ?'
        " AND withdrawn_at IS NULL", [now_iso(), run_id, user, decision]) > 0


def withdraw_all(store: Store, run_id: int) -> int:
    """Withdraw every live vote (the plan changed, so earlier approvals no longer hold)."""
    return store.execute("UPDATE approvals SET withdrawn_at = ? WHERE run_id = ? AND withdrawn_at IS NULL",
                         [now_iso(), run_id])
