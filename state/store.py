"""The bot's own persistence: one SQLite file through sqlite-utils.

    >>> store = open_store(":memory:")
    >>> sorted(store.db.table_names())[:3]
    ['approvals', 'audit', 'checklist']

Calls are short (a row or a few), so they run on the event loop; SQLite in WAL mode
keeps readers and the single writer out of each other's way.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1


def now_iso() -> str:
    """UTC now as ISO text with milliseconds: sorts correctly as a string."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class Store:
    db: sqlite_utils.Database
    path: str
    lock: threading.RLock

    def close(self) -> None:
        self.db.conn.close()

    def ping(self) -> None:
        """Raise when the state database cannot be read (for ``/healthz``)."""
        self.db.execute("SELECT 1")


def open_store(path: str | Path) -> Store:
    """Open (and create or upgrade) the state database at ``path``."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db = sqlite_utils.Database(conn)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: durable across a bot crash, no fsync per row on the event loop
        db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    _create_schema(db)
    return Store(db=db, path=path, lock=threading.RLock())


def _create_schema(db: sqlite_utils.Database) -> None:
    db["runs"].create({
        "id": int, "kind": str, "env": str, "status": str, "requested_by": str,
        "channel": str, "message_ts": str, "created_at": str, "updated_at": str,
        "plan": str,  # JSON: the migrations shown to people (names, checksums), lint, target backup
        "checks": str,  # JSON: the bot's own checklist results
        "backup_id": str, "result": str, "error": str, "current_step": str,
        "abort_requested": int, "scheduled_for": str, "decision": str,
    }, pk="id", not_null={"kind", "env", "status"}, defaults={"abort_requested": 0},
        if_not_exists=True)
    db["runs"].create_index(["env", "status"], if_not_exists=True)
    db["runs"].create_index(["channel", "message_ts"], if_not_exists=True)
    db["checklist"].create({
        "run_id": int, "item": str, "checked": int, "by": str, "at": str, "source": str,
    }, pk=("run_id", "item"), if_not_exists=True)
    db["approvals"].create({
        "id": int, "run_id": int, "user": str, "decision": str, "via": str, "at": str,
        "withdrawn_at": str,
    }, pk="id", if_not_exists=True)
    db["approvals"].create_index(["run_id", "user"], if_not_exists=True)
    db["steps"].create({
        "run_id": int, "name": str, "label": str, "position": int, "status": str,
        "started_at": str, "finished_at": str, "duration": float, "detail": str,
    }, pk=("run_id", "name"), if_not_exists=True)
    db["audit"].create({
        "id": int, "at": str, "run_id": int, "env": str, "user": str, "action": str,
        "detail": str, "channel": str, "message_ts": str,
    }, pk="id", if_not_exists=True)
    db["audit"].create_index(["run_id"], if_not_exists=True)
    db["locks"].create({"env": str, "run_id": int, "holder": str, "since": str},
                       pk="env", if_not_exists=True)
    db["dedup"].create({"key": str, "at": str}, pk="key", if_not_exists=True)
    db["schedules"].create({
        "id": str, "kind": str, "env": str, "run_id": int, "run_at": str, "cron": str,
        "created_by": str, "created_at": str, "status": str, "detail": str,
    }, pk="id", if_not_exists=True)
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
