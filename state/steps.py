"""The steps of a run (pre-flight, backup, status, each migration, verification) with timings.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> start(s, 1, "backup", "Backup", position=2)
    >>> finish(s, 1, "backup", "done", detail="20250101_120000, 1.2 MB")
    >>> [x["status"] for x in steps(s, 1)]
    ['done']
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.redact import redact
from state.store import Store, now_iso


def start(store: Store, run_id: int, name: str, label: str, *, position: int, detail: str = "") -> None:
    with store.lock:
        store.db.table("steps").upsert({"run_id": run_id, "name": name, "label": label, "position": position,
                                  "status": "running", "started_at": now_iso(), "finished_at": None,
                                  "duration": None, "detail": detail}, pk=("run_id", "name"))


def plan(store: Store, run_id: int, name: str, label: str, *, position: int) -> None:
    """Show a step as coming (pending) before it starts."""
    with store.lock:
        store.db.table("steps").upsert({"run_id": run_id, "name": name, "label": label, "position": position,
                                  "status": "pending"}, pk=("run_id", "name"))


def note(store: Store, run_id: int, name: str, detail: str) -> None:
    with store.lock:
        store.db.table("steps").update((run_id, name), {"detail": redact(detail)})


def finish(store: Store, run_id: int, name: str, status: str, *, detail: str | None = None) -> None:
    rows = list(store.db.table("steps").rows_where("run_id = ? AND name = ?", [run_id, name]))
    stamp = now_iso()
    duration = None
    if rows and rows[0].get("started_at"):
        duration = (datetime.fromisoformat(stamp) - datetime.fromisoformat(rows[0]["started_at"])).total_seconds()
    fields: dict[str, Any] = {"status": status, "finished_at": stamp, "duration": duration}
    if detail is not None:
        fields["detail"] = redact(detail)
    with store.lock:
        store.db.table("steps").update((run_id, name), fields)


def steps(store: Store, run_id: int) -> list[dict[str, Any]]:
    return list(store.db.table("steps").rows_where("run_id = ?", [run_id], order_by="position, started_at"))
