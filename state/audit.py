"""The audit log: who did what, when, from which message.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> record(s, "U1", "approve", env="prod", run_id=3, detail="via button")
    >>> [e["action"] for e in entries(s, run_id=3)]
    ['approve']
"""

from __future__ import annotations

from typing import Any

from bot.redact import redact
from state.store import Store, now_iso


def record(store: Store, user: str | None, action: str, *, env: str | None = None,
           run_id: int | None = None, detail: str = "", channel: str | None = None,
           message_ts: str | None = None) -> None:
    with store.lock:
        store.db.table("audit").insert({
            "at": now_iso(), "run_id": run_id, "env": env, "user": user or "",
            "action": action, "detail": redact(detail), "channel": channel,
            "message_ts": message_ts,
        })


def entries(store: Store, *, run_id: int | None = None, env: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[int | str] = []
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    if env is not None:
        where.append("env = ?")
        args.append(env)
    return list(store.db.table("audit").rows_where(" and ".join(where) or None, args,
                                             order_by="id", limit=limit))
