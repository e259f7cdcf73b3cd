"""pgBouncer's admin console: ``SHOW POOLS``, ``PAUSE db``, ``RESUME db`` and a pool health verdict.

    rows = await admin_query("postgresql://postgres@127.0.0.1:6432/pgbouncer", "SHOW POOLS")
    await admin_command(admin_url, "PAUSE app_db")      # wait for running queries, hold new ones
    await admin_command(admin_url, "RESUME app_db")
    health = await pool_health(admin_url, "app_db")     # health.verdict in ("ok", "warn", "fail")

Why a tiny client of our own: the admin console (the ``pgbouncer`` pseudo database)
speaks only the *simple* query protocol, while asyncpg always uses the extended
protocol (Parse/Bind), which the console rejects. The alternative, ``psql -At``
in a subprocess, would need the psql binary on the bot's host and would pass the
password through the environment of a child process. The protocol subset needed
here is small (startup, authentication, one ``Query``, read rows), so this module
speaks PostgreSQL's v3 protocol over asyncio streams: trust, cleartext, md5 and
SCRAM-SHA-256 authentication, ``sslmode=require``/``verify-*`` via STARTTLS, and a
timeout on the whole exchange. Every error message is one redacted sentence.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from actions.db import describe_connect_error
from actions.errors import ActionError
from bot.redact import redact

DEFAULT_PORT = 6432
ADMIN_DATABASE = "pgbouncer"
_PROTOCOL_V3 = 196608
_SSL_REQUEST = 80877103


class _ServerError(Exception):
    """An ErrorResponse from pgBouncer: ``fields`` maps the one-letter codes (M, C, S...)."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        super().__init__(fields.get("M", "unknown error"))


class _LoginError(_ServerError):
    """An ErrorResponse before the session was ready: authentication or admin rights."""


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    user: str
    password: str | None
    database: str
    sslmode: str


def _parse_admin_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ActionError(f"the pgBouncer admin URL is malformed ({exc}): expected "
                          "postgresql://user@host:6432/pgbouncer") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ActionError("the pgBouncer admin URL must start with postgresql:// "
                          "(e.g. postgresql://user@host:6432/pgbouncer)")
    query = dict(parse_qsl(parts.query))
    return _Target(
        host=parts.hostname or query.get("host") or "localhost",
        port=port or int(query.get("port") or DEFAULT_PORT),
        user=unquote(parts.username or query.get("user") or os.environ.get("USER", "postgres")),
        password=unquote(parts.password) if parts.password else query.get("password"),
        database=parts.path.lstrip("/") or query.get("dbname") or ADMIN_DATABASE,
        sslmode=query.get("sslmode", "prefer"),
    )


class _Conn:
    """One admin-console session: just enough of the v3 protocol for simple queries."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, kind: bytes, payload: bytes) -> None:
        self.writer.write(kind + struct.pack("!I", len(payload) + 4) + payload)
        await self.writer.drain()

    async def recv(self) -> tuple[bytes, bytes]:
        header = await self.reader.readexactly(5)
        kind, length = header[:1], struct.unpack("!I", header[1:])[0]
        return kind, await self.reader.readexactly(length - 4)

    def close(self) -> None:
        try:
            self.writer.write(b"X" + struct.pack("!I", 4))
        except Exception:  # already gone: nothing to say goodbye to
            pass
        self.writer.close()


def _error_fields(payload: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for chunk in payload.split(b"\0"):
        if chunk:
            fields[chr(chunk[0])] = chunk[1:].decode("utf-8", "replace")
    return fields


async def _open(target: _Target) -> _Conn:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    conn = _Conn(reader, writer)
    if target.sslmode in ("require", "verify-ca", "verify-full"):
        writer.write(struct.pack("!II", 8, _SSL_REQUEST))
        await writer.drain()
        answer = await reader.readexactly(1)
        if answer != b"S":
            conn.close()
            raise ActionError(f"pgBouncer at {target.host}:{target.port} does not accept SSL but the admin URL "
                              "says sslmode=" + target.sslmode + ": configure client_tls_* in pgbouncer.ini "
                              "or drop sslmode from the URL")
        context = ssl.create_default_context()
        if target.sslmode == "require":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif target.sslmode == "verify-ca":
            context.check_hostname = False
        await writer.start_tls(context, server_hostname=target.host)
    params = {"user": target.user, "database": target.database, "application_name": "migrabot"}
    body = struct.pack("!I", _PROTOCOL_V3) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    writer.write(struct.pack("!I", len(body) + 4) + body)
    await writer.drain()
    await _authenticate(conn, target)
    return conn


async def _authenticate(conn: _Conn, target: _Target) -> None:
    scram: _Scram | None = None
    while True:
        kind, payload = await conn.recv()
        if kind == b"E":
            raise _LoginError(_error_fields(payload))
        if kind == b"Z":
            return
        if kind != b"R":
            continue  # ParameterStatus, BackendKeyData, NoticeResponse
        code = struct.unpack("!I", payload[:4])[0]
        if code == 0:
            continue
        if code in (3, 5, 10) and target.password is None:
            raise ActionError(f"pgBouncer at {target.host}:{target.port} asks user {target.user} for a password "
                              "and the admin URL has none: add it (postgresql://user:PASSWORD@host:6432/pgbouncer, "
                              "from an environment variable)")
        password = target.password or ""
        if code == 3:  # cleartext
            await conn.send(b"p", password.encode() + b"\0")
        elif code == 5:  # md5: "md5" + md5(md5(password + user) + salt)
            inner = hashlib.md5((password + target.user).encode()).hexdigest()
            digest = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
            await conn.send(b"p", b"md5" + digest.encode() + b"\0")
        elif code == 10:  # SASL: the mechanisms offered follow
            mechanisms = [m.decode() for m in payload[4:].split(b"\0") if m]
            if "SCRAM-SHA-256" not in mechanisms:
                raise ActionError(f"pgBouncer offers only {', '.join(mechanisms)}; migrabot speaks SCRAM-SHA-256, "
                                  "md5 and trust: change auth_type in pgbouncer.ini")
            scram = _Scram(password)
            first = scram.client_first()
            await conn.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        elif code == 11 and scram is not None:
            await conn.send(b"p", scram.client_final(payload[4:]))
        elif code == 12 and scram is not None:
            scram.verify_server(payload[4:])
        else:
            raise ActionError(f"pgBouncer asks for an authentication method migrabot does not speak (code {code}): "
                              "use auth_type md5, scram-sha-256 or trust for the admin user")


class _Scram:
    """SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: no channel binding, empty user name."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.auth_message = b""
        self.salted = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ActionError("pgBouncer's SCRAM answer does not match our nonce: check that the admin URL points "
                              "at the pgBouncer you mean")
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(self.salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), self.auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        server_key = hmac.digest(self.salted, b"Server Key", "sha256")
        expected = base64.b64encode(hmac.digest(server_key, self.auth_message, "sha256")).decode()
        if server_final.decode().strip() != f"v={expected}":
            raise ActionError("pgBouncer's SCRAM signature is wrong: the server may not be the pgBouncer you "
                              "configured; check the admin URL")


async def _simple_query(conn: _Conn, command: str) -> list[dict[str, str]]:
    await conn.send(b"Q", command.encode() + b"\0")
    columns: list[str] = []
    rows: list[dict[str, str]] = []
    error: _ServerError | None = None
    while True:
        kind, payload = await conn.recv()
        if kind == b"T":
            columns = []
            count = struct.unpack("!H", payload[:2])[0]
            pos = 2
            for _ in range(count):
                end = payload.index(b"\0", pos)
                columns.append(payload[pos:end].decode())
                pos = end + 1 + 18  # table oid, attnum, type oid, typlen, typmod, format
        elif kind == b"D":
            count = struct.unpack("!H", payload[:2])[0]
            pos, values = 2, []
            for _ in range(count):
                size = struct.unpack("!i", payload[pos:pos + 4])[0]
                pos += 4
                if size < 0:
                    values.append("")
                else:
                    values.append(payload[pos:pos + size].decode("utf-8", "replace"))
                    pos += size
            rows.append(dict(zip(columns, values, strict=False)))
        elif kind == b"E":
            error = _ServerError(_error_fields(payload))
        elif kind == b"Z":
            if error is not None:
                raise error
            return rows


async def _run(admin_url: str, command: str, timeout: float) -> list[dict[str, str]]:
    target = _parse_admin_url(admin_url)
    where = f"{target.host}:{target.port}"

    async def exchange() -> list[dict[str, str]]:
        conn = await _open(target)
        try:
            return await _simple_query(conn, command)
        finally:
            conn.close()

    try:
        return await asyncio.wait_for(exchange(), timeout=timeout)
    except _ServerError as exc:
        message = exc.fields.get("M", "unknown error")
        if isinstance(exc, _LoginError):
            raise ActionError(f"pgBouncer at {where} refused user {target.user} on its admin console ({message}): "
                              "check the user and password in the admin URL, and that the user is in admin_users "
                              "(or stats_users) of pgbouncer.ini") from None
        raise ActionError(f'pgBouncer at {where} rejected "{redact(command)}": {message}') from None
    except TimeoutError:
        raise ActionError(f"pgBouncer at {where} did not answer within {timeout:g}s: is it running, and is the "
                          "admin URL's host and port right?") from None
    except asyncio.IncompleteReadError:
        raise ActionError(f"pgBouncer at {where} closed the connection mid-answer: check its log, and that "
                          "the admin URL points at pgBouncer (port 6432), not PostgreSQL") from None
    except OSError as exc:
        raise ActionError(describe_connect_error(exc, admin_url, timeout).replace(
            "PostgreSQL (or pgBouncer)", "pgBouncer")) from None


async def admin_query(admin_url: str, command: str, *, timeout: float = 5.0) -> list[dict[str, str]]:
    """Run one admin-console command and return its rows as ``{column: text}`` (NULL becomes "").

    >>> rows = await admin_query("postgresql://postgres@127.0.0.1:6432/pgbouncer", "SHOW POOLS")  # doctest: +SKIP
    >>> rows[0]["database"], rows[0]["cl_waiting"]  # doctest: +SKIP
    ('app_db', '0')
    """
    return await _run(admin_url, command, timeout)


async def admin_command(admin_url: str, command: str, timeout: float = 5.0) -> None:
    """Run a console command that returns no rows: ``PAUSE db``, ``RESUME db``, ``RELOAD``, ``KILL db``...

    ``PAUSE db`` returns only once every server connection of ``db`` is released, so give it a
    timeout long enough for running transactions to finish; on timeout an ActionError says so.
    """
    await _run(admin_url, command, timeout)


# --- pool health ---------------------------------------------------------------------------------


@dataclass
class PoolStats:
    """One pool (database, user) from SHOW POOLS, with averages from SHOW STATS."""

    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    maxwait: float  # seconds the oldest waiting client has waited
    pool_mode: str = ""
    avg_wait_time_us: int | None = None  # from SHOW STATS, when available
    avg_query_time_us: int | None = None


@dataclass
class PoolHealth:
    """``verdict`` is "ok", "warn" (clients waiting for a server connection) or "fail" (unreachable)."""

    verdict: str
    reason: str
    pools: list[PoolStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "pools": [asdict(p) for p in self.pools]}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


async def pool_health(admin_url: str, database: str | None = None, *, timeout: float = 5.0,
                      wait_warn: float = 1.0) -> PoolHealth:
    """SHOW POOLS (+ SHOW STATS) for ``database`` (every pool when None) and a verdict with its reason.

    ``warn`` when clients have waited ``wait_warn`` seconds or more for a server connection (a
    client waits a few milliseconds while pgBouncer logs in to PostgreSQL: that is not a problem).
    Never raises for an unreachable pgBouncer: that is a ``fail`` verdict whose reason says why.
    """
    try:
        pools = await admin_query(admin_url, "SHOW POOLS", timeout=timeout)
        try:
            stats = {row.get("database", ""): row for row in await admin_query(admin_url, "SHOW STATS",
                                                                               timeout=timeout)}
        except ActionError:  # stats_users may be allowed POOLS but not STATS; pools suffice
            stats = {}
    except ActionError as exc:
        return PoolHealth("fail", f"pgBouncer is unreachable: {exc}")
    result: list[PoolStats] = []
    for row in pools:
        if row.get("database") == ADMIN_DATABASE or (database and row.get("database") != database):
            continue
        stat = stats.get(row.get("database", ""), {})
        result.append(PoolStats(
            database=row.get("database", ""), user=row.get("user", ""),
            cl_active=_int(row.get("cl_active")), cl_waiting=_int(row.get("cl_waiting")),
            sv_active=_int(row.get("sv_active")), sv_idle=_int(row.get("sv_idle")),
            maxwait=_int(row.get("maxwait")) + _int(row.get("maxwait_us")) / 1e6,
            pool_mode=row.get("pool_mode", ""),
            avg_wait_time_us=_int(stat["avg_wait_time"]) if "avg_wait_time" in stat else None,
            avg_query_time_us=_int(stat["avg_query_time"]) if "avg_query_time" in stat else None,
        ))
    waiting = [p for p in result if p.cl_waiting > 0 and p.maxwait >= wait_warn]
    if waiting:
        worst = max(waiting, key=lambda p: p.maxwait)
        total = sum(p.cl_waiting for p in waiting)
        return PoolHealth("warn", f"{total} client(s) waiting for a server connection (longest {worst.maxwait:.1f}s "
                          f"in pool {worst.database}/{worst.user}): raise default_pool_size or look for long "
                          "transactions", result)
    if database and not result:
        return PoolHealth("ok", f"pgBouncer answers; no pool for {database} yet (it opens on first use)", result)
    active = sum(p.cl_active for p in result)
    return PoolHealth("ok", f"pgBouncer answers; {len(result)} pool(s), {active} active client(s), none waiting",
                      result)


__all__ = ["PoolHealth", "PoolStats", "admin_command", "admin_query", "pool_health"]
