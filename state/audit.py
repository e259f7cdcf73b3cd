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
    store.execute('INSERT INTO audit (at, run_id, env, "user", action, detail, channel, message_ts) '
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  [now_iso(), run_id, env, user or "", action, redact(detail), channel, message_ts])


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
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return store.fetch_all(f"SELECT * FROM audit {clause}ORDER BY id LIMIT {int(limit)}", args)
