"""Checklist ticks of a run, each attributed ("bot" for what the bot proved itself).

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> tick(s, 1, "rollback_plan", True, by="U1", source="person")
    >>> ticks(s, 1)["rollback_plan"]["by"]
    'U1'
"""

from __future__ import annotations

from typing import Any

from state.store import Store, now_iso


def tick(store: Store, run_id: int, item: str, checked: bool, *, by: str, source: str) -> None:
    store.upsert("checklist", {"run_id": run_id, "item": item, "checked": int(checked),
                               "by": by, "at": now_iso(), "source": source}, pk=("run_id", "item"))


def ticks(store: Store, run_id: int) -> dict[str, dict[str, Any]]:
    return {r["item"]: r for r in store.fetch_all("SELECT * FROM checklist WHERE run_id = ? ORDER BY item", [run_id])}
