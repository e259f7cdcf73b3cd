"""Run a migration's SQL without ever holding application queries hostage.

Each attempt runs under ``lock_timeout`` (1 s by default): if the migration cannot get its lock
in time it gives up, so the application queries queued behind it stall at most that long. An
atomic file is then rolled back and retried with exponential backoff and full jitter; every
retry is reported with the sessions that blocked it.

    >>> outcome = await run_atomic(conn, sql, name="20240101_init", settings=RunSettings(),
    ...                            watch=watch, on_event=print)               # doctest: +SKIP
    >>> outcome.ok, outcome.attempts                                         # doctest: +SKIP
    (True, 1)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from actions.blockers import Blocker, BlockerWatch
from actions.events import DeployEvent, EventCallback, emit_safely
from actions.sqlsplit import Statement, split_sql, statement_non_transactional_reason
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


async def _rollback(conn: asyncpg.Connection) -> None:
    if not conn.is_closed() and conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _exhausted(retry: RetryPolicy, attempt: int, started: float, delay: float) -> bool:
    return attempt >= retry.max_attempts or (time.monotonic() - started) + delay > retry.max_total


def _lock_logs(exc: BaseException, settings: RunSettings, attempts: int, started: float,
               blockers: list[Blocker]) -> str:
    who = "; ".join(b.describe() for b in blockers) or "sessions that had finished by the time we looked"
    return redact(
        f"{getattr(exc, 'message', exc)}: could not get the locks it needs within lock_timeout "
        f"{settings.lock_timeout:g}s, {attempts} attempt(s) over {time.monotonic() - started:.1f}s; "
        f"blocked by {who}. Nothing was changed; end or wait for those sessions, then deploy again "
        "(or raise retry.max_attempts / retry.max_total).")


async def run_atomic(conn: asyncpg.Connection, sql: str, *, name: str, settings: RunSettings,
                     watch: BlockerWatch, on_event: EventCallback | None = None,
                     in_transaction: InTransaction | None = None, before_commit_sql: str = "") -> RunOutcome:
    """Run ``sql`` in one transaction, retrying on lock timeout.

    ``in_transaction`` (a callable) and then ``before_commit_sql`` (sent with COMMIT) run inside it.
    """
    started = time.monotonic()
    prefix = (f"BEGIN; SET LOCAL lock_timeout = {_ms(settings.lock_timeout)}; "
              f"SET LOCAL statement_timeout = {_ms(settings.statement_timeout)};\n")
    pid = conn.get_server_pid()
    attempt = 0
    while True:
        attempt += 1
        t0 = time.monotonic()
        try:
            async with watch.watching(pid):
                # one round trip, simple protocol: the whole file at once as Prisma sends it, inside
                # our transaction with its lock and statement timeouts (error positions are shifted back).
                # With nothing to do in between, the row update and COMMIT ride along: a failing
                # statement skips the rest of the string and leaves the transaction aborted.
                if in_transaction is None:
                    finish = f"{before_commit_sql};\n" if before_commit_sql else ""
                    await conn.execute(f"{prefix}{sql}\n;\n{finish}COMMIT")
                else:
                    await conn.execute(prefix + sql)
            if in_transaction is not None:
                await in_transaction(conn)
                await conn.execute(f"{before_commit_sql};\nCOMMIT" if before_commit_sql else "COMMIT")
            return RunOutcome(True, attempt, time.monotonic() - t0)
        except asyncpg.LockNotAvailableError as exc:
            await _rollback(conn)
            blockers = watch.last or await watch.fallback([pid])
            delay = backoff_delay(settings.retry, attempt)
            if _exhausted(settings.retry, attempt, started, delay):
                return RunOutcome(False, attempt, time.monotonic() - t0,
                                  _lock_logs(exc, settings, attempt, started, blockers), None, blockers)
            await emit_safely(on_event, DeployEvent("retrying", name, attempt=attempt + 1,
                                                    duration=time.monotonic() - t0, delay=delay,
                                                    blockers=blockers, logs=redact(str(exc))))
            await asyncio.sleep(delay)
        except asyncpg.PostgresError as exc:
            await _rollback(conn)
            return RunOutcome(False, attempt, time.monotonic() - t0, describe_db_error(exc, sql, offset=len(prefix)))


def _statement_label(index: int, total: int, statement: Statement) -> str:
    return f"statement {index} of {total} (line {statement.line}): {statement.first_line[:200]}"


async def run_statements(conn: asyncpg.Connection, sql: str, *, name: str, settings: RunSettings,
                         watch: BlockerWatch, on_event: EventCallback | None = None,
                         after: InTransaction | None = None) -> RunOutcome:
    """Run ``sql`` statement by statement outside a transaction (CREATE INDEX CONCURRENTLY & co).

    A plain statement that hits the lock timeout outside a transaction block is retried alone
    (it changed nothing). CONCURRENTLY/VACUUM-style statements run without lock_timeout: they
    take no lock that blocks application reads or writes, and cancelling them half-way would
    leave an invalid index behind. On failure the outcome names the statement reached.
    """
    statements = split_sql(sql)
    total = len(statements)
    pid = conn.get_server_pid()
    started = time.monotonic()
    t_all = time.monotonic()
    attempts = 1
    await conn.execute(f"SET lock_timeout = {_ms(settings.lock_timeout)}; "
                       f"SET statement_timeout = {_ms(settings.statement_timeout)}")
    try:
        for index, statement in enumerate(statements, 1):
            reason = statement_non_transactional_reason(statement.text)
            background = reason is not None and "transaction" not in reason
            attempt = 0
            while True:
                attempt += 1
                t0 = time.monotonic()
                try:
                    if background:
                        await conn.execute("SET lock_timeout = 0")
                    async with watch.watching(pid):
                        await conn.execute(statement.text)
                    break
                except asyncpg.LockNotAvailableError as exc:
                    in_block = conn.is_in_transaction()
                    await _rollback(conn)
                    blockers = watch.last or await watch.fallback([pid])
                    delay = backoff_delay(settings.retry, attempt)
                    label = _statement_label(index, total, statement)
                    if in_block or _exhausted(settings.retry, attempt, started, delay):
                        logs = _lock_logs(exc, settings, attempt, started, blockers)
                        return RunOutcome(False, attempt, time.monotonic() - t0,
                                          f"{logs}\nStopped at {label}; the statements before it are committed.",
                                          label, blockers)
                    attempts += 1
                    await emit_safely(on_event, DeployEvent(
                        "retrying", name, attempt=attempt + 1, duration=time.monotonic() - t0, delay=delay,
                        blockers=blockers, logs=redact(str(exc)), statement=label))
                    await asyncio.sleep(delay)
                except asyncpg.PostgresError as exc:
                    await _rollback(conn)
                    label = _statement_label(index, total, statement)
                    logs = describe_db_error(exc, statement.text, statement.line)
                    return RunOutcome(False, attempt, time.monotonic() - t0,
                                      f"{logs}\nFailed at {label}; the statements before it are committed "
                                      "(this file runs outside a transaction).", label)
                finally:
                    if background and not conn.is_closed():
                        await conn.execute(f"SET lock_timeout = {_ms(settings.lock_timeout)}")
        if conn.is_in_transaction():
            # the file opened a transaction it never closed: do not leave it dangling
            await conn.execute("ROLLBACK")
            return RunOutcome(False, attempts, time.monotonic() - t_all,
                              "the file opened a transaction (BEGIN) without COMMIT; it was rolled back", None)
        if after is not None:
            await after(conn)
        return RunOutcome(True, attempts, time.monotonic() - t_all)
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout; RESET statement_timeout")
