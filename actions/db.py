"""Connecting to PostgreSQL with a timeout and one clear sentence for every way it fails.

    >>> database_name("postgresql://app:pw@db:5432/prod?schema=public")
    'prod'
    >>> asyncpg_dsn("postgresql://app@db:6432/prod?pgbouncer=true&schema=app")
    ('postgresql://app@db:6432/prod', {'search_path': 'app'})

Prisma's own URL parameters (``pgbouncer``, ``schema``, ``connection_limit`` …) are not
libpq's: they are removed before connecting, and ``schema`` becomes the search_path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from actions.errors import ActionError
from bot.redact import redact

APPLICATION_NAME = "migrabot"
DEFAULT_CONNECT_TIMEOUT = 10.0

# Parameters Prisma reads from DATABASE_URL that libpq/asyncpg do not understand.
_PRISMA_PARAMS = {"pgbouncer", "schema", "connection_limit", "pool_timeout", "socket_timeout",
                  "statement_cache_size", "connect_timeout", "sslaccept", "sslidentity", "sslcert"}


def asyncpg_dsn(url: str) -> tuple[str, dict[str, str]]:
    """The URL asyncpg should get, and server settings derived from Prisma's parameters."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    settings: dict[str, str] = {}
    kept = []
    for key, value in params:
        if key == "schema" and value:
            settings["search_path"] = value
        if key not in _PRISMA_PARAMS:
            kept.append((key, value))
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return dsn, settings


def database_name(url: str) -> str:
    """The database's real name: percent-decoded, as the server knows it.

    >>> database_name("postgresql://app@db/my%20db"), database_name("postgresql://app@db/pr%C3%B8d")
    ('my db', 'prød')
    """
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        name = dict(parse_qsl(parts.query)).get("dbname", "")
    return name


def with_database(url: str, dbname: str) -> str:
    """The same URL pointing at another database on the same server (``dbname`` percent-encoded).

    >>> with_database("postgresql://app@db:5432/prod?sslmode=require", "prod 2/ø")
    'postgresql://app@db:5432/prod%202%2F%C3%B8?sslmode=require'
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), parts.query, parts.fragment))


def host_and_port(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host") or "localhost"
    port = parts.port or query.get("port") or 5432
    return f"{host}:{port}"


def user_name(url: str) -> str:
    return urlsplit(url).username or dict(parse_qsl(urlsplit(url).query)).get("user") or "(default user)"


def describe_connect_error(exc: BaseException, url: str, timeout: float) -> str:
    """One sentence naming the cause and what to check next (the runbook's "Cannot connect")."""
    where = host_and_port(url)
    db = database_name(url) or "(default)"
    if isinstance(exc, socket.gaierror):
        return (f"cannot resolve the host of {where}: check the host name in the URL and DNS "
                "(runbook: \"Cannot connect to database\")")
    if isinstance(exc, ConnectionRefusedError):
        return (f"connection refused by {where}: is PostgreSQL (or pgBouncer) running and "
                "listening there, and does the firewall allow it?")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return (f"no answer from {where} within {timeout:g}s: check network and firewall rules "
                "(the runbook's `telnet db-host 5432`)")
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        text = str(exc)
        if "no encryption" in text or "SSL" in text:
            return (f"the server at {where} refuses connections without SSL: add "
                    "?sslmode=require to the URL")
        return (f"authentication failed for user {user_name(url)} at {where}: check the user "
                "and password in the URL (or the environment variable it comes from)")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f'database "{db}" does not exist on {where}: create it or fix the database '
                "name in the URL")
    if isinstance(exc, asyncpg.ObjectNotInPrerequisiteStateError) and "accepting connections" in str(exc):
        return (f'database "{db}" on {where} does not accept connections (ALLOW_CONNECTIONS is off): a restore '
                "stopped during its swap leaves it so; `migrabot restore ENV --clean-up` lets connections in again "
                "and drops the copy it was filling (it refuses while a restore is still running)")
    if isinstance(exc, ssl.SSLError | ConnectionResetError) or "SSL" in str(exc):
        return f"SSL negotiation with {where} failed ({exc}): check sslmode in the URL"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return (f"{where} has no free connection slots: check the pool sizes (DB_POOL_MAX, "
                "pgBouncer default_pool_size) and idle sessions")
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {exc}"


async def connect(url: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  application_name: str = APPLICATION_NAME,
                  server_settings: dict[str, str] | None = None,
                  **kwargs: Any) -> asyncpg.Connection:
    """Open one connection or raise :class:`ActionError` with the reason in one sentence.

    ``statement_cache_size=0`` keeps it usable through pgBouncer transaction pooling.
    """
    dsn, settings = asyncpg_dsn(url)
    settings = {"application_name": application_name, **settings, **(server_settings or {})}
    kwargs.setdefault("statement_cache_size", 0)
    try:
        return await asyncio.wait_for(
            asyncpg.connect(dsn, timeout=timeout, server_settings=settings, **kwargs),
            timeout=timeout + 1,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ssl.SSLError) as exc:
        raise ActionError(describe_connect_error(exc, url, timeout), code="connect") from None
    except ValueError as exc:  # asyncpg's DSN parser
        raise ActionError(f"the database URL is malformed: {redact(str(exc))}", code="connect") from None


@asynccontextmanager
async def connection(url: str, **kwargs: Any) -> AsyncIterator[asyncpg.Connection]:
    """``async with connection(url) as conn:`` — closed on the way out, whatever happens.

    For short queries: every statement gets a client-side timeout (``command_timeout``, at
    least a minute), so a server that stops answering after the connect cannot hang the bot.
    Long work (migrations, restores) opens its own connection with :func:`connect`.
    """
    kwargs.setdefault("command_timeout", max(float(kwargs.get("timeout", DEFAULT_CONNECT_TIMEOUT)), 60.0))
    conn = await connect(url, **kwargs)
    try:
        yield conn
    finally:
        await close_quietly(conn)


# What a server-side failure or a broken connection raises from asyncpg (a closed connection
# raises InterfaceError on its next use; TimeoutError is an OSError).
CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ConnectionError)


def lost_connection_error(exc: BaseException, during: str, state: str, next_step: str, *,
                          closed: bool = True) -> ActionError:
    """One sentence for a server-side failure: what happened, in what state things are, what to do.

    >>> str(lost_connection_error(ConnectionResetError("reset by peer"), "reading the status",
    ...                           "nothing was changed", "run it again"))
    'lost the database connection while reading the status (reset by peer); nothing was changed: run it again'
    """
    reason = redact(" ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split()))
    what = f"lost the database connection while {during}" if closed else f"{during} failed"
    return ActionError(f"{what} ({reason}); {state}: {next_step}", code="connection_lost")


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close politely within 5 s, else cut the connection: closing must never hang or raise."""
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:
        conn.terminate()


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL.

    >>> quote_ident('my"db')
    '"my""db"'
    """
    return '"' + name.replace('"', '""') + '"'


async def ping(url: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> float:
    """Connect and run ``SELECT 1``; the round trip in seconds (ActionError when it fails).

    The runbook's "Verify database connectivity" (`psql $DATABASE_URL -c "SELECT 1;"`).
    """

    started = time.monotonic()
    async with connection(url, timeout=timeout) as conn:
        try:
            await conn.fetchval("SELECT 1", timeout=timeout)
        except (asyncpg.PostgresError, TimeoutError, OSError) as exc:
            raise ActionError(f"connected to {host_and_port(url)} but SELECT 1 failed: {exc}") from None
    return time.monotonic() - started
