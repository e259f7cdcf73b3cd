"""The leader lease: which replica runs what must run once (the scheduler, restart recovery).

    >>> from state.store import open_store
    >>> lease = Lease(open_store(":memory:"), seconds=15)
    >>> lease.renew(), lease.held     # SQLite state: one process, always the leader
    (True, True)

With PostgreSQL state the lease is a session-level advisory lock (:data:`LEADER_KEY`) taken
with ``pg_try_advisory_lock`` on a connection of its own, kept open while this replica leads.
:meth:`Lease.renew` is called every heartbeat (a third of the lease): a follower tries to take
the lock, the leader checks its connection still answers. When the leader dies its session
ends and PostgreSQL frees the lock at once (a killed process), or after the TCP keepalives set
on the session (a lost host: about one lease); a follower takes it at its next heartbeat. A
leader whose connection stops answering within the lease steps down by itself.

Through pgBouncer the pool must be in session mode (an advisory lock belongs to a server
session); in transaction mode two replicas could both believe they lead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.redact import redact
from state.store import PostgresStore, Store, load_psycopg

if TYPE_CHECKING:  # for annotations only: psycopg is loaded when a PostgreSQL store is opened
    import psycopg

log = logging.getLogger(__name__)

#: The advisory lock key of the leader lease ("migrlead"), in the state database.
LEADER_KEY = 0x6D696772_6C656164


class Lease:
    """This replica's claim to lead; ``held`` is what the last :meth:`renew` found."""

    def __init__(self, store: Store, *, seconds: float = 15.0) -> None:
        self.store = store
        self.seconds = seconds
        self.held = False
        self._conn: psycopg.Connection[Any] | None = None

    def renew(self) -> bool:
        """Take the lease, or check it is still ours; returns whether this replica leads now.

        Never raises: an unreachable server means "not the leader" (and is logged once per change).
        """
        if not isinstance(self.store, PostgresStore):
            self.held = True
            return True
        try:
            conn = self._connection(self.store)
            if self.held:
                conn.execute("SELECT 1")  # the session lives, so the lock it holds is still ours
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", [LEADER_KEY]).fetchone()
                self.held = bool(row and row[0])
        except Exception as exc:  # psycopg.Error, OSError: lost or unreachable; either way we do not lead
            if self.held or self._conn is not None:
                log.warning("leader lease: the state database does not answer (%s)",
                            redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
            self._drop()
        return self.held

    def _connection(self, store: PostgresStore) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        step = max(1, int(self.seconds / 3))
        # client-side keepalives too: a leader cut off from the server must not wait on a dead socket
        conn = load_psycopg().connect(store.url, autocommit=True, connect_timeout=max(2, step),
                                      application_name="migrabot-leader", keepalives=1, keepalives_idle=step,
                                      keepalives_interval=step, keepalives_count=2,
                                      tcp_user_timeout=step * 2000)
        # a leader that cannot answer within a heartbeat steps down; the server drops a vanished
        # leader's session (and so its lock) after about one lease of silence
        conn.execute(f"SET statement_timeout = {step * 1000}")
        conn.execute(f"SET tcp_keepalives_idle = {step}")
        conn.execute(f"SET tcp_keepalives_interval = {step}")
        conn.execute("SET tcp_keepalives_count = 2")
        self._conn = conn
        return conn

    def _drop(self) -> None:
        self.held = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already gone: nothing to close
                pass
        self._conn = None

    def release(self) -> None:
        """Give the lease up (a clean stop): another replica leads at its next heartbeat."""
        if self.held and self._conn is not None and not self._conn.closed and not self._conn.broken:
            # Closing the session frees the lock only once the server's backend has exited, a moment
            # after close() returns; unlocking first makes the hand-over done when this returns.
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", [LEADER_KEY])
            except Exception:  # the session is gone already, and its lock with it
                pass
        self._drop()
