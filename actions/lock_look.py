"""Look before queueing: is a session holding a lock that the migration's statement would wait for?

A statement that asks for a lock another session holds in a conflicting mode waits in the
lock queue, and every application query asking for the same table then waits behind it. A
migration under ``lock_timeout`` gives up after that long, but an attempt made while the holder
is still there can only fail: the application stalls for ``lock_timeout`` for nothing. So before
each attempt the engine looks at ``pg_locks`` for granted locks on the statement's target
relations in a mode that conflicts with the one it needs (the lock level table of
:mod:`actions.lock_levels`), and waits, queueing nothing, while one is there.

    >>> needs = lock_needs('ALTER TABLE "users" ADD COLUMN "note" text;')
    >>> needs.relations, needs.describe()
    (('users',), 'ACCESS EXCLUSIVE on users')
    >>> lock_needs("CREATE TABLE a (id int); CREATE INDEX a_id ON a (id);").relations   # created here
    ()

The look costs no round trip of its own on the first attempt: :func:`guard_sql` is a ``DO``
block sent in the attempt's own query string, before the file, which raises
:data:`HOLDERS_SQLSTATE` (nothing was locked) when it sees a holder. A new holder can still
arrive between the look and the statement: the attempt keeps its ``lock_timeout``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from actions.lock_levels import MODES, UNKNOWN, conflicts, sql_locks

#: SQLSTATE of the guard's error: a conflicting lock is held, the attempt stopped before locking anything.
HOLDERS_SQLSTATE = "MB001"


def pg_mode(mode: str) -> str:
    """pg_locks' spelling of a lock mode.

    >>> pg_mode("SHARE ROW EXCLUSIVE")
    'ShareRowExclusiveLock'
    """
    return "".join(word.capitalize() for word in mode.split()) + "Lock"


@dataclass(frozen=True)
class LockNeeds:
    """The locks a file (or a statement) will ask for on relations that exist before it runs."""

    needs: tuple[tuple[str, str], ...] = ()  # (relation, mode) as lock_levels names them

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(relation for relation, _ in self.needs))

    def held_modes(self) -> list[tuple[str, str]]:
        """``(relation, pg_locks mode)`` pairs a holder must not have for the statement to go through."""
        pairs = {(relation, pg_mode(held)) for relation, mode in self.needs for held in MODES if conflicts(held, mode)}
        return sorted(pairs)

    def describe(self) -> str:
        return ", ".join(f"{mode} on {relation}" for relation, mode in self.needs)

    def __bool__(self) -> bool:
        return bool(self.needs)


def lock_needs(sql: str) -> LockNeeds:
    """The known locks ``sql`` asks for on relations it does not create itself (those nobody else holds).

    Statements the lock table does not know are left out: their attempt relies on ``lock_timeout``.
    """
    created: set[str] = set()
    found: dict[tuple[str, str], None] = {}
    for _, locks in sql_locks(sql):
        created.update(locks.creates)
        for lock in locks.locks:
            if lock.relation is not None and lock.mode != UNKNOWN and lock.relation not in created:
                found[(lock.relation, lock.mode)] = None
    return LockNeeds(tuple(found))


#: Statement forms that only create something new (or change what the same file created).
_CREATING = frozenset({"CREATE TABLE", "CREATE INDEX", "CREATE TYPE", "CREATE EXTENSION", "CREATE SCHEMA",
                       "CREATE SEQUENCE", "CREATE FUNCTION", "CREATE DOMAIN", "CREATE TRIGGER", "COMMENT ON"})
# a new table filled from a query, or hung under an existing one: not "new objects only"
_FILLED_OR_ATTACHED = re.compile(r"\bAS\s*\(?\s*(?:SELECT|VALUES|TABLE|WITH|EXECUTE)\b|\bPARTITION\s+OF\b|\bINHERITS\b",
                                 re.I)


def only_new_objects(sql: str) -> bool:
    r"""True when every statement of ``sql`` creates something new, locking only what the file itself creates.

    Such a file waits for no session (nobody else can hold a lock on a relation that does not exist
    yet) and takes milliseconds whatever the data (it reads and writes no rows), so the engine may
    send several of them in one round trip. Anything the lock table does not know is not such a file.

    >>> only_new_objects('CREATE TABLE "A" (id int PRIMARY KEY);\nCREATE INDEX "A_i" ON "A" (id);')
    True
    >>> only_new_objects('CREATE TABLE b (id int REFERENCES "A" (id));'), only_new_objects("SELECT 1")
    (False, False)
    >>> only_new_objects("CREATE TABLE c AS SELECT * FROM big"), only_new_objects("INSERT INTO d VALUES (1)")
    (False, False)
    """
    created: set[str] = set()
    for statement, locks in sql_locks(sql):
        if not locks.known or _FILLED_OR_ATTACHED.search(statement.text):
            return False
        if not all(form in _CREATING or (form.startswith("ALTER TABLE ") and "CONCURRENTLY" not in form)
                   for form in locks.forms):
            return False
        created.update(locks.creates)
        if any(lock.relation is None or lock.relation not in created for lock in locks.locks):
            return False
    return True


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _relations_sql(needs: LockNeeds) -> str:
    """One condition per relation: any granted lock when every mode conflicts, else the conflicting modes."""
    every = {pg_mode(m) for m in MODES}
    parts = []
    for relation in needs.relations:
        modes = sorted({mode for rel, mode in needs.held_modes() if rel == relation})
        target = f"l.relation = to_regclass({_literal(relation)})"
        parts.append(target if set(modes) == every
                     else f"{target} AND l.mode IN ({', '.join(_literal(m) for m in modes)})")
    return "(" + " OR ".join(f"({p})" for p in parts) + ")"


def _holders_where(needs: LockNeeds) -> str:
    # granted relation locks of other sessions in this database (relation OIDs are per database)
    return ("l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation' AND l.database = "
            f"(SELECT oid FROM pg_database WHERE datname = current_database()) AND {_relations_sql(needs)}")


def guard_sql(needs: LockNeeds) -> str:
    """A ``DO`` block raising :data:`HOLDERS_SQLSTATE` while another session holds a conflicting lock.

    Sent inside the attempt's transaction, before the file: it locks nothing itself, so when it
    raises nothing was queued. Empty when there is nothing to look for. Short, so that
    ``pg_stat_activity.query`` (1 kB by default) still shows the start of the file after it.

    >>> guard_sql(lock_needs("ALTER TABLE t ADD COLUMN c int"))[:60]
    'DO $look$BEGIN IF EXISTS(SELECT FROM pg_locks l WHERE l.gran'
    """
    if not needs:
        return ""
    return (f"DO $look$BEGIN IF EXISTS(SELECT FROM pg_locks l WHERE {_holders_where(needs)}) THEN "
            f"RAISE EXCEPTION USING ERRCODE = '{HOLDERS_SQLSTATE}'; END IF; END$look$;\n")


def is_guard_error(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == HOLDERS_SQLSTATE


@dataclass(frozen=True)
class Holding:
    """A session holding ``mode`` on ``relation``, which conflicts with what the migration needs."""

    pid: int
    relation: str
    mode: str  # pg_locks' spelling


async def holders(conn: asyncpg.Connection, needs: LockNeeds, *, timeout: float = 10.0) -> list[Holding]:
    """The sessions holding, right now, a lock that conflicts with ``needs`` (a look: it queues nothing)."""
    if not needs:
        return []
    rows = await conn.fetch(
        f"SELECT DISTINCT l.pid, l.relation::regclass::text AS relation, l.mode FROM pg_locks l "
        f"WHERE {_holders_where(needs)} ORDER BY l.pid", timeout=timeout)
    return [Holding(r["pid"], r["relation"], r["mode"]) for r in rows]
