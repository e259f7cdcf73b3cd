"""The bot's own persistence: one SQLite file through sqlite-utils.

    >>> store = open_store(":memory:")
    >>> sorted(store.db.table_names())[:3]
    ['approvals', 'audit', 'checklist']
    >>> schema_version(store.db) == SCHEMA_VERSION
    True

Calls are short (a row or a few), so they run on the event loop; SQLite in WAL mode
keeps readers and the single writer out of each other's way.

The file carries its schema version in ``meta.schema_version``. :func:`open_store` brings an
older file up to :data:`SCHEMA_VERSION` by the steps in :data:`STEPS` (each in its own
transaction) and refuses a file written by a newer migrabot with :class:`StateVersionError`.
A new version is one more ``(version, function)`` pair at the end of :data:`STEPS`; a step
never edits an earlier one, because files out there were made by it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from state.errors import StateVersionError

__all__ = ["StateVersionError", "Store", "open_store"]


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


def _v1_tables(db: sqlite_utils.Database) -> None:
    """The schema of the first release. ``if_not_exists`` because files made before the
    version row existed (or by a start that stopped half-way) already hold some of it."""
    db.table("runs").create({
        "id": int, "kind": str, "env": str, "status": str, "requested_by": str,
        "channel": str, "message_ts": str, "created_at": str, "updated_at": str,
        "plan": str,  # JSON: the migrations shown to people (names, checksums), lint, target backup
        "checks": str,  # JSON: the bot's own checklist results
        "backup_id": str, "result": str, "error": str, "current_step": str,
        "abort_requested": int, "scheduled_for": str, "decision": str,
    }, pk="id", not_null={"kind", "env", "status"}, defaults={"abort_requested": 0},
        if_not_exists=True)
    db.table("runs").create_index(["env", "status"], if_not_exists=True)
    db.table("runs").create_index(["channel", "message_ts"], if_not_exists=True)
    db.table("checklist").create({
        "run_id": int, "item": str, "checked": int, "by": str, "at": str, "source": str,
    }, pk=("run_id", "item"), if_not_exists=True)
    db.table("approvals").create({
        "id": int, "run_id": int, "user": str, "decision": str, "via": str, "at": str,
        "withdrawn_at": str,
    }, pk="id", if_not_exists=True)
    db.table("approvals").create_index(["run_id", "user"], if_not_exists=True)
    db.table("steps").create({
        "run_id": int, "name": str, "label": str, "position": int, "status": str,
        "started_at": str, "finished_at": str, "duration": float, "detail": str,
    }, pk=("run_id", "name"), if_not_exists=True)
    db.table("audit").create({
        "id": int, "at": str, "run_id": int, "env": str, "user": str, "action": str,
        "detail": str, "channel": str, "message_ts": str,
    }, pk="id", if_not_exists=True)
    db.table("audit").create_index(["run_id"], if_not_exists=True)
    db.table("locks").create({"env": str, "run_id": int, "holder": str, "since": str},
                       pk="env", if_not_exists=True)
    db.table("dedup").create({"key": str, "at": str}, pk="key", if_not_exists=True)
    db.table("schedules").create({
        "id": str, "kind": str, "env": str, "run_id": int, "run_at": str, "cron": str,
        "created_by": str, "created_at": str, "status": str, "detail": str,
    }, pk="id", if_not_exists=True)
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)


def _v2_age_and_status_indexes(db: sqlite_utils.Database) -> None:
    """Forgetting by age (``DELETE ... WHERE at < ?``) and the pending-schedules scan at start-up
    read an index instead of the whole table."""
    db.table("audit").create_index(["at"])
    db.table("dedup").create_index(["at"])
    db.table("schedules").create_index(["status"])


Step = tuple[int, Callable[[sqlite_utils.Database], None]]

# In version order, each one above the previous; never edit a released step, add one.
STEPS: tuple[Step, ...] = (
    (1, _v1_tables),
    (2, _v2_age_and_status_indexes),
)
SCHEMA_VERSION = STEPS[-1][0]


def open_store(path: str | Path) -> Store:
    """Open (and create or upgrade) the state database at ``path``.

    Raises :class:`StateVersionError` when the file was written by a newer migrabot, is not a
    migrabot state file, or an upgrade step failed (the file then stays at its old version).
    """
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db = sqlite_utils.Database(conn)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        # before any PRAGMA that writes the file header: a refused file stays byte for byte as it was
        _refuse_unknown(db, path, SCHEMA_VERSION)
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: durable across a bot crash, no fsync per row on the event loop
            db.execute("PRAGMA synchronous=NORMAL")
        upgrade(db, path=path)
    except BaseException:
        conn.close()
        raise
    return Store(db=db, path=path, lock=threading.RLock())


def schema_version(db: sqlite_utils.Database) -> int:
    """The version recorded in ``meta``; 0 when none is (a new file, or one from before the row).

        >>> schema_version(sqlite_utils.Database(memory=True))
        0
    """
    if not db["meta"].exists():
        return 0
    # fetchall: a statement left half-read would keep its read lock and stall a writer
    rows = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if not rows:
        return 0
    try:
        return int(rows[0][0])
    except (TypeError, ValueError):
        raise StateVersionError(f"state file has schema version {rows[0][0]!r} in its meta table, which is "
                                "not a number: point [state] path at another file") from None


def upgrade(db: sqlite_utils.Database, *, path: str = "", steps: Sequence[Step] = STEPS) -> int:
    """Apply every step above the file's version, each with its version row in one transaction.

    Returns the version the file is at. Safe when two processes open the same file at once:
    each step takes the write lock first and skips itself when the other process did it.

        >>> db = sqlite_utils.Database(memory=True)
        >>> upgrade(db) == upgrade(db) == schema_version(db) == SCHEMA_VERSION
        True
    """
    known = steps[-1][0] if steps else 0
    _refuse_unknown(db, path, known)
    for version, step in steps:
        found = schema_version(db)
        if found >= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            found = schema_version(db)  # again under the write lock: another process may have done it
            if found < version:
                step(db)
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [str(version)])
            db.execute("COMMIT")
        except BaseException as exc:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, Exception) and not isinstance(exc, StateVersionError):
                raise StateVersionError(
                    f"state file {path or '(in memory)'} could not be upgraded from schema {found} to {version} "
                    f"({type(exc).__name__}: {exc}); it is unchanged at schema {found}: fix the cause "
                    "(disk full, file read-only) and start again, or run the previous migrabot") from exc
            raise
    return schema_version(db)


def _refuse_unknown(db: sqlite_utils.Database, path: str, known: int) -> None:
    """Raise when the file is newer than ``known`` or holds another program's tables."""
    where = path or "(in memory)"
    found = schema_version(db)
    if found > known:
        raise StateVersionError(
            f"state file {where} was written by a newer migrabot (schema {found}, this one knows {known}): "
            "upgrade migrabot, or point [state] path at another file")
    tables = db.table_names()
    if found == 0 and tables and "runs" not in tables:
        raise StateVersionError(
            f"state file {where} is not a migrabot state file (it holds the tables {', '.join(sorted(tables))}): "
            "point [state] path at another file")
