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
    return list(store.db.table("approvals").rows_where(
        "run_id = ? AND withdrawn_at IS NULL", [run_id], order_by="id"))


def vote(store: Store, run_id: int, user: str, decision: str, *, via: str) -> bool:
    """Record ``decision`` ("approve" or "reject"); a changed mind replaces the earlier vote.

    Returns False when the person already has this same live vote.
    """
    with store.lock:
        current = [v for v in live(store, run_id) if v["user"] == user]
        if current and current[-1]["decision"] == decision:
            return False
        stamp = now_iso()
        for v in current:
            store.db.table("approvals").update(v["id"], {"withdrawn_at": stamp})
        store.db.table("approvals").insert({"run_id": run_id, "user": user, "decision": decision,
                                      "via": via, "at": stamp})
    return True


def withdraw(store: Store, run_id: int, user: str, decision: str) -> bool:
    """Withdraw a person's live vote of ``decision`` (a removed reaction)."""
    with store.lock:
        cursor = store.db.execute(
            "UPDATE approvals SET withdrawn_at = ? WHERE run_id = ? AND [user] = ? AND decision = ?"
            " AND withdrawn_at IS NULL", [now_iso(), run_id, user, decision])
    return cursor.rowcount > 0


def withdraw_all(store: Store, run_id: int) -> int:
    """Withdraw every live vote (the plan changed, so earlier approvals no longer hold)."""
    with store.lock:
        cursor = store.db.execute(
            "UPDATE approvals SET withdrawn_at = ? WHERE run_id = ? AND withdrawn_at IS NULL",
            [now_iso(), run_id])
    return cursor.rowcount
