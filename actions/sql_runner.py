"""Run a migration's SQL without ever holding application queries hostage.

Before each attempt the engine looks at ``pg_locks`` for sessions holding a lock that conflicts
with one the file needs (:mod:`actions.lock_look`); while one is there it waits without queueing,
so the application is not stalled by attempts that cannot succeed, and each holder is reported
("waiting" events). Each attempt runs under ``lock_timeout`` (1 s by default): if the migration
still cannot get its lock in time (a holder arrived after the look, or a statement the lock table
does not know) it gives up, so the application queries queued behind it stall at most that long.
An atomic file is then rolled back and retried with exponential backoff and full jitter; every
retry is reported with the sessions that blocked it.

    >>> outcome = await run_atomic(conn, sql, name="20240101_init", settings=RunSettings(),
    ...                            watch=watch, on_event=print)               # doctest: +SKIP
    >>> outcome.ok, outcome.attempts                                         # doctest: +SKIP
    (True, 1)
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from actions.blockers import Blocker, BlockerWatch, sessions
from actions.db import CONNECTION_ERRORS
from actions.errors import ActionError
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.lock_look import Holding, LockNeeds, guard_sql, holders, is_guard_error, lock_needs
from actions.sqlsplit import Statement, split_sql, statement_non_transactional_reason
from actions.statement_progress import PROGRESS_PREFIX, StatementProgress
from bot.config import RetryPolicy
from bot.redact import redact

InTransaction = Callable[[asyncpg.Connection], Awaitable[object]]


@dataclass(frozen=True)
class RunSettings:
    lock_timeout: float = 1.0
    statement_timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class RunOutcome:
    ok: bool
    attempts: int
    duration: float  # of the successful (or last) attempt
    logs: str | None = None
    statement: str | None = None
    blockers: list[Blocker] = field(default_factory=list)
    progress: StatementProgress | None = None  # files run statement by statement
    waited: float = 0.0  # seconds spent waiting, queueing nothing, for sessions holding conflicting locks
    waited_for: list[Blocker] = field(default_factory=list)  # those sessions


class ConnectionLost(Exception):
    """The connection died while a migration ran; ``progress`` says how far a statement-by-statement file got."""

    def __init__(self, cause: BaseException, progress: StatementProgress | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.progress = progress


def session_settings_sql(settings: RunSettings) -> str:
    return (f"SET lock_timeout = {_ms(settings.lock_timeout)}; "
            f"SET statement_timeout = {_ms(settings.statement_timeout)}")


async def apply_session_settings(conn: asyncpg.Connection, settings: RunSettings) -> None:
    """SET the session's lock and statement timeouts; ActionError (nothing changed) when the server refuses.

    Called before anything is written, so a value the server refuses never leaves a row behind.
    """
    try:
        await conn.execute(session_settings_sql(settings))
    except asyncpg.PostgresError as exc:
        if conn.is_closed():
            raise
        detail = " ".join(filter(None, [getattr(exc, "message", None) or str(exc), getattr(exc, "hint", None)]))
        statement = _ms(settings.statement_timeout) if settings.statement_timeout else "off"
        raise ActionError(
            f"PostgreSQL refused the session settings (lock_timeout = {_ms(settings.lock_timeout)}, "
            f"statement_timeout = {statement}): {detail}; nothing was applied and no row was written to "
            "_prisma_migrations: fix lock_timeout/statement_timeout in migrabot.toml (whole milliseconds up to "
            "2147483647) and deploy again", code="settings") from None


def _ms(seconds: float | None) -> str:
    """A PostgreSQL duration literal; 0 means "no limit"."""
    return f"'{round((seconds or 0) * 1000)}ms'"


def backoff_delay(retry: RetryPolicy, attempt: int) -> float:
    """Full jitter: uniform between 0 and min(max_delay, base_delay * 2^(attempt-1))."""
    return random.uniform(0, min(retry.max_delay, retry.base_delay * 2 ** (attempt - 1)))


def describe_db_error(exc: BaseException, sql: str, first_line: int = 1, offset: int = 0) -> str:
    """The error as Prisma logs it, plus where in the file it happened.

    ``offset``: characters sent before ``sql`` in the same query (PostgreSQL counts from there).
    """
    code = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None) or str(exc)
    parts = [f"Database error code: {code}", "", "Database error:", f"ERROR: {message}"] if code else [str(exc)]
    for label, attr in (("DETAIL", "detail"), ("HINT", "hint"), ("CONTEXT", "context")):
        value = getattr(exc, attr, None)
        if value:
            parts.append(f"{label}: {value}")
    position = getattr(exc, "position", None)
    if position and str(position).isdigit():
        offset = int(position) - 1 - offset
    if position and str(position).isdigit() and 0 <= offset < len(sql):
        line_no = first_line + sql.count("\n", 0, offset)
        line_start = sql.rfind("\n", 0, offset) + 1
        line_end = sql.find("\n", offset)
        text = sql[line_start: None if line_end < 0 else line_end].strip()
        parts.append(f"at line {line_no}: {text}")
    return redact("\n".join(parts))


def attempt_prefix(settings: RunSettings) -> str:
    """What opens each attempt of a file run in one transaction: BEGIN, then its lock and statement timeouts."""
    return (f"BEGIN; SET LOCAL lock_timeout = {_ms(settings.lock_timeout)}; "
            f"SET LOCAL statement_timeout = {_ms(settings.statement_timeout)};\n")


async def _rollback(conn: asyncpg.Connection) -> None:
    if not conn.is_closed() and conn.is_in_transaction():
        await conn.execute("ROLLBACK")


#: After a failed multi-statement string: end the aborted transaction it left open, if any.
rollback_quietly = _rollback


def _exhausted(retry: RetryPolicy, attempt: int, started: float, delay: float) -> bool:
    return attempt >= retry.max_attempts or (time.monotonic() - started) + delay > retry.max_total


def _lock_logs(exc: BaseException, settings: RunSettings, attempts: int, started: float,
               blockers: list[Blocker], *, whole_file: bool = True) -> str:
    """``whole_file``: the file ran in one transaction, so nothing of it changed; else only this statement."""
    who = "; ".join(b.describe() for b in blockers) or "sessions that had finished by the time we looked"
    changed = ("Nothing was changed; end or wait for those sessions, then deploy again" if whole_file
               else "This statement changed nothing (the progress below says what the others did); end or wait "
                    "for those sessions")
    return redact(
        f"{getattr(exc, 'message', exc)}: could not get the locks it needs within lock_timeout "
        f"{settings.lock_timeout:g}s, {attempts} attempt(s) over {time.monotonic() - started:.1f}s; "
        f"blocked by {who}. {changed} (or raise retry.max_attempts / retry.max_total).")


#: While a holder is seen, look again after the retry policy's backoff, but at most this long: a
#: look queues nothing, and the migration should start within this long of the holder's end.
LOOK_INTERVAL_MAX = 0.5


@dataclass
class Waited:
    """How long a migration waited (queueing nothing) for sessions holding conflicting locks, and for whom."""

    seconds: float = 0.0
    sessions: dict[int, Blocker] = field(default_factory=dict)

    @property
    def blockers(self) -> list[Blocker]:
        return list(self.sessions.values())


def _holdings(found: list[Holding], needs: LockNeeds) -> str:
    held = "; ".join(f"pid {h.pid} holds {h.mode} on {h.relation}" for h in found)
    return f"{held}; the migration needs {needs.describe()}"


async def wait_while_held(conn: asyncpg.Connection, needs: LockNeeds, *, name: str, settings: RunSettings,
                          started: float, waited: Waited, next_attempt: int, on_event: EventCallback | None,
                          statement: str | None = None) -> list[Holding]:
    """Wait, queueing nothing, while a session holds a lock that conflicts with ``needs``.

    Looks at ``pg_locks`` after the retry policy's backoff (capped at :data:`LOOK_INTERVAL_MAX`)
    until no holder is seen; returns ``[]`` then, or the holders still there when waiting longer
    would pass ``retry.max_total`` (counted from ``started``). A "waiting" event names the
    holders each time a new one is seen.
    """
    t0 = time.monotonic()
    reported: set[int] = set()
    look = 0
    try:
        while True:
            found = await holders(conn, needs)
            if not found:
                return []
            look += 1
            pids = sorted({h.pid for h in found})
            unknown = [p for p in pids if p not in waited.sessions]
            if unknown:
                waited.sessions.update({b.pid: b for b in await sessions(conn, unknown)})
            delay = min(backoff_delay(settings.retry, look), LOOK_INTERVAL_MAX)
            if time.monotonic() - started + delay > settings.retry.max_total:
                return found
            if set(pids) - reported:
                reported.update(pids)
                await emit_safely(on_event, DeployEvent(
                    "waiting", name, attempt=next_attempt, duration=waited.seconds + time.monotonic() - t0,
                    delay=delay, blockers=[waited.sessions[p] for p in pids if p in waited.sessions],
                    logs=_holdings(found, needs), statement=statement))
            await asyncio.sleep(delay)
    finally:
        waited.seconds += time.monotonic() - t0


def _held_logs(found: list[Holding], needs: LockNeeds, waited: Waited, started: float, attempts: int,
               *, whole_file: bool = True) -> str:
    who = "; ".join(waited.sessions[h.pid].describe() if h.pid in waited.sessions else f"pid {h.pid}"
                    for h in {h.pid: h for h in found}.values())
    changed = ("Nothing was changed; end or wait for those sessions, then deploy again" if whole_file
               else "This statement did not run (the progress below says what the others did); end or wait "
                    "for those sessions")
    return redact(
        f"waited {waited.seconds:.1f}s, queueing nothing, for sessions holding a conflicting lock "
        f"({_holdings(found, needs)}); they still held it when retry.max_total ran out "
        f"({time.monotonic() - started:.1f}s, {attempts} attempt(s)): {who}. {changed} (or raise retry.max_total).")


async def run_atomic(conn: asyncpg.Connection, sql: str, *, name: str, settings: RunSettings,
                     watch: BlockerWatch, on_event: EventCallback | None = None,
                     in_transaction: InTransaction | None = None, before_commit_sql: str = "",
                     first_sql: str = "") -> RunOutcome:
    """Run ``sql`` in one transaction; while a session holds a conflicting lock, wait without queueing.

    ``first_sql`` (the started row: its own committed transaction) leads the first round trip;
    ``in_transaction`` (a callable) and then ``before_commit_sql`` (sent with COMMIT) run inside
    the file's transaction. Before each attempt the engine looks for sessions holding a lock the
    file's statements conflict with (:mod:`actions.lock_look`): the first look rides in the
    attempt's own query string; while one is seen it waits (the retry policy's backoff and total
    limit) and attempts only when none is. An attempt still runs under ``lock_timeout`` (a holder can
    arrive between the look and the statement), and a lock timeout is retried with backoff.
    """
    started = time.monotonic()
    needs = lock_needs(sql)
    prefix = attempt_prefix(settings) + guard_sql(needs)
    pid = conn.get_server_pid()
    attempt = 0
    waited = Waited()
    look_first = False
    lead = f"{first_sql};\n" if first_sql else ""
    while True:
        if look_first:
            still = await wait_while_held(conn, needs, name=name, settings=settings, started=started,
                                          waited=waited, next_attempt=attempt + 1, on_event=on_event)
            if still:
                return RunOutcome(False, attempt, 0.0, _held_logs(still, needs, waited, started, attempt), None,
                                  waited.blockers, waited=waited.seconds, waited_for=waited.blockers)
        look_first = True  # whatever stops this attempt, look before the next one
        attempt += 1
        t0 = time.monotonic()
        try:
            async with watch.watching(pid):
                # one round trip, simple protocol: the whole file at once as Prisma sends it, inside
                # our transaction with its lock and statement timeouts (error positions are shifted back).
                # With nothing to do in between, the row update and COMMIT ride along: a failing
                # statement skips the rest of the string and leaves the transaction aborted.
                sent, lead = lead, ""
                if in_transaction is None:
                    finish = f"{before_commit_sql};\n" if before_commit_sql else ""
                    await conn.execute(f"{sent}{prefix}{sql}\n;\n{finish}COMMIT")
                else:
                    await conn.execute(sent + prefix + sql)
            if in_transaction is not None:
                await in_transaction(conn)
                await conn.execute(f"{before_commit_sql};\nCOMMIT" if before_commit_sql else "COMMIT")
            return RunOutcome(True, attempt, time.monotonic() - t0, waited=waited.seconds,
                              waited_for=waited.blockers)
        except asyncpg.LockNotAvailableError as exc:
            await _rollback(conn)
            blockers = watch.last or await watch.fallback([pid])
            delay = backoff_delay(settings.retry, attempt)
            if _exhausted(settings.retry, attempt, started, delay):
                return RunOutcome(False, attempt, time.monotonic() - t0,
                                  _lock_logs(exc, settings, attempt, started, blockers), None, blockers,
                                  waited=waited.seconds, waited_for=waited.blockers)
            await emit_safely(on_event, DeployEvent("retrying", name, attempt=attempt + 1,
                                                    duration=time.monotonic() - t0, delay=delay,
                                                    blockers=blockers, logs=redact(str(exc))))
            await asyncio.sleep(delay)
        except CONNECTION_ERRORS as exc:
            if conn.is_closed() or not isinstance(exc, asyncpg.PostgresError):
                raise ConnectionLost(exc) from None
            await _rollback(conn)
            if is_guard_error(exc):  # a holder was seen before anything was locked: not an attempt
                attempt -= 1
                continue
            return RunOutcome(False, attempt, time.monotonic() - t0,
                              describe_db_error(exc, sql, offset=len(sent) + len(prefix)),
                              waited=waited.seconds, waited_for=waited.blockers)


def _statement_label(index: int, total: int, statement: Statement) -> str:
    return f"statement {index} of {total} (line {statement.line}): {statement.first_line[:200]}"


async def run_statements(conn: asyncpg.Connection, sql: str, *, name: str, settings: RunSettings,
                         watch: BlockerWatch, on_event: EventCallback | None = None,
                         after: InTransaction | None = None,
                         ran: Callable[[int], Awaitable[object]] | None = None) -> RunOutcome:
    """Run ``sql`` statement by statement outside a transaction (CREATE INDEX CONCURRENTLY & co).

    ``ran(n)`` is awaited whenever statements 1..n have run and no transaction of the file is open
    (the engine records it in the row, so a process killed half-way leaves how far it got).

    A plain statement that hits the lock timeout outside a transaction block is retried alone
    (it changed nothing). CONCURRENTLY/VACUUM-style statements run without lock_timeout: they
    take no lock that blocks application reads or writes, and cancelling them half-way would
    leave an invalid index behind. On failure the outcome names the statement reached and its
    ``progress`` says which statements are committed, which were rolled back with the file's own
    ``BEGIN … COMMIT`` and which did not run; a lost connection raises :class:`ConnectionLost`
    carrying the same progress.
    """
    statements = split_sql(sql)
    total = len(statements)
    progress = StatementProgress(total)
    open_block: list[int] = []  # statements run since the file's own BEGIN: committed only by its COMMIT
    pid = conn.get_server_pid()
    started = time.monotonic()
    t_all = time.monotonic()
    attempts = 1

    def failed(logs: str, index: int | None, attempt: int, t0: float, label: str | None,
               blockers: list[Blocker] | None = None) -> RunOutcome:
        progress.stop(index, open_block)
        return RunOutcome(False, attempt, time.monotonic() - t0, f"{logs}\n{PROGRESS_PREFIX}{progress.describe()}.",
                          label, blockers or [], progress)

    waited = Waited()
    try:
        await conn.execute(session_settings_sql(settings))
        for index, statement in enumerate(statements, 1):
            reason = statement_non_transactional_reason(statement.text)
            background = reason is not None and "transaction" not in reason
            # look before queueing, as run_atomic does; not for background statements (they run without
            # lock_timeout and block no application query) nor inside the file's own BEGIN (its locks are held)
            needs = lock_needs(statement.text) if reason is None and not conn.is_in_transaction() else LockNeeds()
            guard = guard_sql(needs)
            look_first = False
            attempt = 0
            while True:
                label = _statement_label(index, total, statement)
                if look_first and needs:
                    still = await wait_while_held(conn, needs, name=name, settings=settings, started=started,
                                                  waited=waited, next_attempt=attempt + 1, on_event=on_event,
                                                  statement=label)
                    if still:
                        logs = _held_logs(still, needs, waited, started, attempt, whole_file=False)
                        outcome = failed(f"{logs}\nStopped at {label}.", index, attempt, time.monotonic(), label,
                                         waited.blockers)
                        outcome.waited, outcome.waited_for = waited.seconds, waited.blockers
                        return outcome
                look_first = True
                attempt += 1
                t0 = time.monotonic()
                try:
                    if background:
                        await conn.execute("SET lock_timeout = 0")
                    async with watch.watching(pid):
                        # the guard and the statement in one string: one implicit transaction, one round trip
                        await conn.execute(guard + statement.text)
                    break
                except asyncpg.LockNotAvailableError as exc:
                    in_block = conn.is_in_transaction()
                    await _rollback(conn)
                    blockers = watch.last or await watch.fallback([pid])
                    delay = backoff_delay(settings.retry, attempt)
                    if in_block or _exhausted(settings.retry, attempt, started, delay):
                        logs = _lock_logs(exc, settings, attempt, started, blockers, whole_file=False)
                        return failed(f"{logs}\nStopped at {label}.", index, attempt, t0, label, blockers)
                    attempts += 1
                    await emit_safely(on_event, DeployEvent(
                        "retrying", name, attempt=attempt + 1, duration=time.monotonic() - t0, delay=delay,
                        blockers=blockers, logs=redact(str(exc)), statement=label))
                    await asyncio.sleep(delay)
                except CONNECTION_ERRORS as exc:
                    if conn.is_closed() or not isinstance(exc, asyncpg.PostgresError):
                        if _CONCURRENT_INDEX.match(statement.text):
                            progress.note = ("; an interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: "
                                             "drop it before running the statement again")
                        raise ConnectionLost(exc, progress.stop(index, open_block, interrupted=True)) from None
                    await _rollback(conn)
                    if is_guard_error(exc):  # a holder was seen before anything was locked: not an attempt
                        attempt -= 1
                        continue
                    logs = describe_db_error(exc, statement.text, statement.line, offset=len(guard))
                    return failed(f"{logs}\nFailed at {label}.", index, attempt, t0, label)
                finally:
                    if background and not conn.is_closed():
                        await conn.execute(f"SET lock_timeout = {_ms(settings.lock_timeout)}")
            if conn.is_in_transaction():
                open_block.append(index)
            elif open_block and _ROLLS_BACK.match(statement.text):
                progress.rolled_back.extend([*open_block, index])
                open_block.clear()
            else:
                progress.committed.extend([*open_block, index])
                open_block.clear()
            if ran is not None and not open_block:
                await ran(index)
        if conn.is_in_transaction():
            # the file opened a transaction it never closed: do not leave it dangling
            await conn.execute("ROLLBACK")
            return failed("the file opened a transaction (BEGIN) without COMMIT; it was rolled back", None,
                          attempts, t_all, None)
        if after is not None:
            await after(conn)
        return RunOutcome(True, attempts, time.monotonic() - t_all, progress=progress, waited=waited.seconds,
                          waited_for=waited.blockers)
    except CONNECTION_ERRORS as exc:
        if conn.is_closed() or not isinstance(exc, asyncpg.PostgresError):
            if progress.failed is None:
                progress.stop(None, open_block, interrupted=True)
            raise ConnectionLost(exc, progress) from None
        raise
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout; RESET statement_timeout")


_CONCURRENT_INDEX = re.compile(r"^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX|REINDEX)\b.*\bCONCURRENTLY\b", re.I | re.S)
_ROLLS_BACK = re.compile(r"^\s*(?:ROLLBACK|ABORT)\b(?!\s+TO\b)", re.I)
