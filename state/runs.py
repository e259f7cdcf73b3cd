"""Runs: one migration, rollback, undo, resolve or terminate, from request to result.

A run's life has one home: this module. Its statuses are :class:`RunStatus`, the moves
between them are the :data:`TRANSITIONS` table, and every status change goes through
:func:`transition`, a compare-and-set that refuses a move the table does not allow and, when
the run ends, frees its environment's lock in the same transaction. No caller releases a
lock by hand, and a double click or a retried request can never move a run twice.

With several replicas on one PostgreSQL state, the move to ``running`` records the replica that
won it as the run's ``owner``; that process stamps ``heartbeat_at`` while it lives
(:func:`keep_alive`), and a run whose heartbeat went stale is taken over (:func:`claim`) and
explained by the leader, never re-run.

    >>> from state.store import open_store
    >>> from state import locks
    >>> s = open_store(":memory:")
    >>> run_id = create(s, kind="migrate", env="staging", requested_by="U1", channel="C1")
    >>> locks.acquire(s, "staging", run_id=run_id, holder="U1") is None
    True
    >>> transition(s, run_id, RunStatus.RUNNING), transition(s, run_id, RunStatus.RUNNING)
    (True, False)
    >>> transition(s, run_id, RunStatus.AWAITING)   # not in the table: refused, nothing changes
    False
    >>> transition(s, run_id, RunStatus.SUCCEEDED), locks.holder_of(s, "staging")
    (True, None)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, TypedDict, cast

from bot.redact import redact, redact_obj
from state.store import Store, now_iso

log = logging.getLogger(__name__)
#: Seconds between two heartbeats of a process's running runs, unless the bot sets its own pace:
#: well inside the default ``leader_lease`` (15 s) after which another replica examines the run.
KEEP_ALIVE_EVERY = 5.0


class RunStatus(StrEnum):
    """Where a run is in its life. Stored as its text value."""

    AWAITING = "awaiting"  # waiting for its checklist, approvals, target, typed confirmation
    SCHEDULED = "scheduled"  # as awaiting, and starts by itself at ``scheduled_for``
    RUNNING = "running"  # its executor is working
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"  # someone pressed Abort (before it started, or it stopped at a safe point)
    REJECTED = "rejected"  # an approver rejected it
    EXPIRED = "expired"  # a scheduled start was missed by too much
    INTERRUPTED = "interrupted"  # the bot restarted while it ran; examined and explained, never re-run
    CANCELLED = "cancelled"  # ended with nothing done (nothing to do, Slack refused it, modal cancelled…)


S = RunStatus
#: The statuses a run may be created in.
INITIAL: frozenset[RunStatus] = frozenset({S.AWAITING, S.SCHEDULED})
#: Every move a run may make; a status with no moves is final.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.AWAITING: frozenset({S.RUNNING, S.ABORTED, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.SCHEDULED: frozenset({S.AWAITING, S.ABORTED, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.ABORTED, S.INTERRUPTED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(), S.FAILED: frozenset(), S.ABORTED: frozenset(), S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(), S.INTERRUPTED: frozenset(), S.CANCELLED: frozenset(),
}
FINAL: frozenset[RunStatus] = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
OPEN: tuple[RunStatus, ...] = tuple(s for s in RunStatus if s not in FINAL)
#: Not started yet: approvals, ticks and Abort still apply.
WAITING: tuple[RunStatus, ...] = (S.AWAITING, S.SCHEDULED)
FINISHED = tuple(s for s in RunStatus if s in FINAL)

_JSON_FIELDS = ("plan", "checks", "result")


class Run(TypedDict):
    """A row of ``runs``, with its JSON fields decoded."""

    id: int
    kind: str
    env: str
    status: str
    requested_by: str
    channel: str
    message_ts: str | None
    created_at: str
    updated_at: str
    plan: dict[str, Any]
    checks: dict[str, Any]
    backup_id: str | None
    result: dict[str, Any] | None
    error: str | None
    current_step: str | None
    abort_requested: int
    scheduled_for: str | None
    decision: str | None
    owner: str | None  # the replica executing it (set by the move to running)
    heartbeat_at: str | None  # when that replica last said it is alive


def sources_of(status: RunStatus) -> frozenset[RunStatus]:
    """The statuses from which the table allows a move to ``status``.

    >>> sorted(sources_of(RunStatus.RUNNING))
    [<RunStatus.AWAITING: 'awaiting'>]
    """
    return frozenset(s for s, moves in TRANSITIONS.items() if status in moves)


def _decode(row: dict[str, Any]) -> Run:
    for key in _JSON_FIELDS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return cast(Run, row)


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
           status: RunStatus = RunStatus.AWAITING, plan: dict[str, Any] | None = None) -> int:
    """A new run in one of the :data:`INITIAL` statuses; returns its id."""
    status = RunStatus(status)
    if status not in INITIAL:
        raise ValueError(f"a run starts as {' or '.join(sorted(INITIAL))}, not {status}")
    stamp = now_iso()
    row = _encode({
        "kind": kind, "env": env, "status": str(status), "requested_by": requested_by,
        "channel": channel, "created_at": stamp, "updated_at": stamp, "plan": plan or {},
        "checks": {}, "abort_requested": 0,
    })
    cols = ", ".join(f'"{k}"' for k in row)
    return int(store.insert(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' for _ in row)})", list(row.values())))


def delete(store: Store, run_id: int) -> None:
    """Forget a run that was never shown to anyone (its environment was locked)."""
    store.execute("DELETE FROM runs WHERE id = ?", [run_id])


def _in(statuses: Iterable[str]) -> tuple[str, list[str]]:
    values = [str(s) for s in statuses]
    return ", ".join("?" for _ in values), values


def count_open(store: Store) -> int:
    marks, values = _in(OPEN)
    row = store.fetch_one(f"SELECT count(*) AS n FROM runs WHERE status IN ({marks})", values)
    return int(row["n"]) if row else 0


def get(store: Store, run_id: int) -> Run | None:
    row = store.fetch_one("SELECT * FROM runs WHERE id = ?", [run_id])
    return _decode(row) if row else None


def by_message(store: Store, channel: str, message_ts: str) -> Run | None:
    row = store.fetch_one("SELECT * FROM runs WHERE channel = ? AND message_ts = ? ORDER BY id LIMIT 1",
                          [channel, message_ts])
    return _decode(row) if row else None


def update(store: Store, run_id: int, **fields: Any) -> None:
    """Change a run's other fields; its status changes only through :func:`transition`."""
    if "status" in fields:
        raise ValueError("a run's status changes only through state.runs.transition")
    fields["updated_at"] = now_iso()
    encoded = _encode(fields)
    sets = ", ".join(f'"{k}" = ?' for k in encoded)
    store.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*encoded.values(), run_id])


def transition(store: Store, run_id: int, to_status: RunStatus, *,
               only_from: Iterable[RunStatus] | None = None, **fields: Any) -> bool:
    """Move ``run_id`` to ``to_status`` if the table allows it from the run's current status.

    ``only_from`` narrows the allowed sources further (a restore's Cancel applies only to a
    run still ``awaiting``); naming a source the table does not allow is a programming error.
    Returns False, changing nothing, when the run is elsewhere (a double click, a retry, a
    run that already ended, another replica that moved it first). A move to a final status
    frees the environment's lock held by this run, in the same transaction. A move to
    ``running`` records this replica as the run's owner (``owner``, ``heartbeat_at``): the
    replica that wins the compare-and-set executes the run.
    """
    to_status = RunStatus(to_status)
    sources = sources_of(to_status)
    if only_from is not None:
        narrowed = {RunStatus(s) for s in only_from}
        if not narrowed <= sources:
            raise ValueError(f"the transitions table has no move from {sorted(narrowed - sources)} to {to_status}")
        sources = frozenset(narrowed)
    if not sources:
        return False
    stamp = now_iso()
    if to_status is RunStatus.RUNNING:
        fields = {"owner": store.replica, "heartbeat_at": stamp, **fields}
        keep_alive(store)
    encoded = _encode({**fields, "status": str(to_status), "updated_at": stamp})
    sets = ", ".join(f'"{k}" = ?' for k in encoded)
    marks, values = _in(sources)
    with store.transaction():
        moved = store.execute(f"UPDATE runs SET {sets} WHERE id = ? AND status IN ({marks})",
                              [*encoded.values(), run_id, *values]) == 1
        if moved and to_status in FINAL:
            store.execute("DELETE FROM locks WHERE run_id = ?", [run_id])
    return moved


def _select(where: str, order: str = "id", limit: int | None = None) -> str:
    return f"SELECT * FROM runs WHERE {where} ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit else "")


def open_runs(store: Store, env: str | None = None) -> list[Run]:
    marks, values = _in(OPEN)
    where, args = f"status IN ({marks})", list(values)
    if env:
        where += " AND env = ?"
        args.append(env)
    return [_decode(r) for r in store.fetch_all(_select(where), args)]


def history(store: Store, env: str, limit: int = 10) -> list[Run]:
    return [_decode(r) for r in store.fetch_all(_select("env = ?", "id DESC", limit), [env])]


def last_succeeded(store: Store, env: str, kind: str = "migrate") -> Run | None:
    rows = store.fetch_all(_select("env = ? AND kind = ? AND status = ?", "id DESC", 1),
                           [env, kind, str(RunStatus.SUCCEEDED)])
    return _decode(rows[0]) if rows else None


# --- ownership across replicas ---------------------------------------------------------------------


def heartbeat(store: Store) -> int:
    """This replica is alive: stamp ``heartbeat_at`` on every run it executes; returns how many.

        >>> from state.store import open_store
        >>> s = open_store(":memory:", replica="host-a:1")
        >>> run_id = create(s, kind="migrate", env="dev", requested_by="U1", channel="C1")
        >>> transition(s, run_id, RunStatus.RUNNING), get(s, run_id)["owner"], heartbeat(s)
        (True, 'host-a:1', 1)
    """
    return store.execute("UPDATE runs SET heartbeat_at = ? WHERE owner = ? AND status = ?",
                         [now_iso(), store.replica, str(RunStatus.RUNNING)])


def keep_alive(store: Store, every: float = KEEP_ALIVE_EVERY) -> None:
    """Stamp :func:`heartbeat` every ``every`` seconds, on a thread of its own, until the store closes.

    Started by the first move to ``running`` in this process (a CLI command carrying out a run
    too), or earlier by the bot at its own pace (a third of ``[state] leader_lease``); once per store.
    """
    with store.lock:
        if store.keeper is not None or store.closed.is_set():
            return
        store.keeper = threading.Thread(target=_keep, args=(store, every), name="migrabot-run-heartbeat",
                                        daemon=True)
    store.keeper.start()


def _keep(store: Store, every: float) -> None:
    while not store.closed.wait(every):
        try:
            heartbeat(store)
        except Exception as exc:  # the state database is away: this process's runs go stale if it stays away
            if not store.closed.is_set():
                log.warning("heartbeat of this process's running runs failed: %s", redact(str(exc)))


def stale_running(store: Store, older_than: str) -> list[Run]:
    """Runs still ``running`` whose owner has not said it is alive since ``older_than`` (ISO text).

    A run from before owners were recorded (no heartbeat at all) counts as stale.
    """
    return [_decode(r) for r in store.fetch_all(
        _select("status = ? AND (heartbeat_at IS NULL OR heartbeat_at < ?)"),
        [str(RunStatus.RUNNING), older_than])]


def claim(store: Store, run_id: int, *, older_than: str | None) -> bool:
    """Take over a running run to examine it: this replica becomes its owner, once.

    With ``older_than``, only while the owner's heartbeat is still older (it did not come back);
    False when another replica claimed it first or the run is no longer running.
    """
    stale = " AND (heartbeat_at IS NULL OR heartbeat_at < ?)" if older_than is not None else ""
    args = [older_than] if older_than is not None else []
    return store.execute(f"UPDATE runs SET owner = ?, heartbeat_at = ? WHERE id = ? AND status = ?{stale}",
                         [store.replica, now_iso(), run_id, str(RunStatus.RUNNING), *args]) == 1
