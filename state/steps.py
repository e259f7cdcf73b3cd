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
    store.upsert("steps", {"run_id": run_id, "name": name, "label": label, "position": position,
                           "status": "running", "started_at": now_iso(), "finished_at": None,
                           "duration": None, "detail": detail}, pk=("run_id", "name"))


def plan(store: Store, run_id: int, name: str, label: str, *, position: int) -> None:
    """Show a step as coming (pending) before it starts."""
    store.upsert("steps", {"run_id": run_id, "name": name, "label": label, "position": position,
                           "status": "pending"}, pk=("run_id", "name"))


def note(store: Store, run_id: int, name: str, detail: str) -> None:
    store.execute("UPDATE steps SET detail = ? WHERE run_id = ? AND name = ?", [redact(detail), run_id, name])


def finish(store: Store, run_id: int, name: str, status: str, *, detail: str | None = None) -> None:
    row = store.fetch_one("SELECT started_at FROM steps WHERE run_id = ? AND name = ?", [run_id, name])
    stamp = now_iso()
    duration = None
    if row and row.get("started_at"):
        duration = (datetime.fromisoformat(stamp) - datetime.fromisoformat(row["started_at"])).total_seconds()
    fields: dict[str, Any] = {"status": status, "finished_at": stamp, "duration": duration}
    if detail is not None:
        fields["detail"] = redact(detail)
    sets = ", ".join(f'"{k}" = ?' for k in fields)
    store.execute(f"UPDATE steps SET {sets} WHERE run_id = ? AND name = ?", [*fields.values(), run_id, name])


def steps(store: Store, run_id: int) -> list[dict[str, Any]]:
    return store.fetch_all("SELECT * FROM steps WHERE run_id = ? ORDER BY position, COALESCE(started_at, '')", [run_id])
