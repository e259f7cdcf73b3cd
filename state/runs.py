"""Runs: one migration, rollback, undo or resolve, from request to result.

Status changes go through :func:`transition`, a compare-and-set, so a double click or a
retried request can never move a run twice.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> run_id = create(s, kind="migrate", env="staging", requested_by="U1", channel="C1")
    >>> transition(s, run_id, ["awaiting"], "running"), transition(s, run_id, ["awaiting"], "running")
    (True, False)
"""

from __future__ import annotations

import json
from typing import Any

from bot.redact import redact, redact_obj
from state.store import Store, now_iso

OPEN = ("awaiting", "scheduled", "running")
FINISHED = ("succeeded", "failed", "aborted", "rejected", "expired", "interrupted", "cancelled")
_JSON_FIELDS = ("plan", "checks", "result")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON_FIELDS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON for the structured fields; every string redacted before it is stored."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k in _JSON_FIELDS and v is not None:
            out[k] = json.dumps(redact_obj(v))
        else:
            out[k] = redact(v) if isinstance(v, str) and k in ("error", "decision") else v
    return out


def create(store: Store, *, kind: str, env: str, requested_by: str, channel: str,
           status: str = "awaiting", plan: dict[str, Any] | None = None) -> int:
    stamp = now_iso()
    with store.lock:
        table = store.db["runs"]
        table.insert(_encode({
            "kind": kind, "env": env, "status": status, "requested_by": requested_by,
            "channel": channel, "created_at": stamp, "updated_at": stamp, "plan": plan or {},
            "checks": {}, "abort_requested": 0,
        }))
        return int(table.last_pk)


def delete(store: Store, run_id: int) -> None:
    """Forget a run that was never shown to anyone (its environment was locked)."""
    with store.lock:
        store.db.execute("DELETE FROM runs WHERE id = ?", [run_id])


def count_open(store: Store) -> int:
    marks = ", ".join("?" for _ in OPEN)
    return int(store.db["runs"].count_where(f"status IN ({marks})", list(OPEN)))


def get(store: Store, run_id: int) -> dict[str, Any] | None:
    rows = list(store.db["runs"].rows_where("id = ?", [run_id]))
    return _decode(rows[0]) if rows else None


def by_message(store: Store, channel: str, message_ts: str) -> dict[str, Any] | None:
    rows = list(store.db["runs"].rows_where("channel = ? AND message_ts = ?", [channel, message_ts]))
    return _decode(rows[0]) if rows else None


def update(store: Store, run_id: int, **fields: Any) -> None:
    fields["updated_at"] = now_iso()
    with store.lock:
        store.db["runs"].update(run_id, _encode(fields))


def transition(store: Store, run_id: int, from_statuses: list[str] | tuple[str, ...], to_status: str,
               **fields: Any) -> bool:
    """Move ``run_id`` to ``to_status`` only if it is in one of ``from_statuses``."""
    fields = _encode({**fields, "status": to_status, "updated_at": now_iso()})
    sets = ", ".join(f"[{k}] = ?" for k in fields)
    marks = ", ".join("?" for _ in from_statuses)
    with store.lock:
        cursor = store.db.execute(
            f"UPDATE runs SET {sets} WHERE id = ? AND status IN ({marks})",
            [*fields.values(), run_id, *from_statuses])
    return cursor.rowcount == 1


def open_runs(store: Store, env: str | None = None) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in OPEN)
    where, args = f"status IN ({marks})", list(OPEN)
    if env:
        where += " AND env = ?"
        args.append(env)
    return [_decode(r) for r in store.db["runs"].rows_where(where, args, order_by="id")]


def history(store: Store, env: str, limit: int = 10) -> list[dict[str, Any]]:
    return [_decode(r) for r in store.db["runs"].rows_where(
        "env = ?", [env], order_by="id desc", limit=limit)]


def last_succeeded(store: Store, env: str, kind: str = "migrate") -> dict[str, Any] | None:
    rows = list(store.db["runs"].rows_where("env = ? AND kind = ? AND status = 'succeeded'",
                                            [env, kind], order_by="id desc", limit=1))
    return _decode(rows[0]) if rows else None
