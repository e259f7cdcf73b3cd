"""Load and validate ``migrabot.toml``.

Every problem is reported at once, each with its key path::

    >>> cfg, problems, warnings = check_config_text('''
    ... [environments.prod]
    ... database_url = "postgresql://app@db/prod"
    ... required_approvals = "two"
    ... ''')
    >>> [str(p) for p in problems]
    ['environments.prod.required_approvals: expected an integer, got "two"']

With no file at all, the runbook's own variables (``DATABASE_URL``, ``NODE_ENV``)
define one environment, so the bot points where the team's scripts point.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from bot.redact import redact, redact_obj, register_env_secrets, register_secret

DEFAULT_CONFIG_PATH = "migrabot.toml"
PROD_NAMES = {"prod", "production"}

# Bounds, checked where each value is read (a value out of bounds is a problem with its key path).
PG_MAX_MS = 2_147_483_647  # the largest duration setting PostgreSQL accepts (INT_MAX milliseconds)
MAX_DURATION = 365 * 86400.0  # any other duration: a year is past every sane use, and timers stay exact
MAX_APPROVALS = 50
MAX_BACKUP_JOBS = 64  # each pg_dump job is one more connection to the server
MAX_POOL_SIZE = 10_000
MAX_ATTEMPTS = 1000  # backoff computes base_delay * 2**(attempt-1): past ~1000 that overflows a float
MAX_KEEP_LAST = 100_000
MAX_KEEP_DAYS = 36_500.0
MAX_FREE_MARGIN = 100.0
MAX_NESTING = 100  # TOML values nested deeper than this are reported, not parsed (tomllib recurses)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"the configuration has {len(problems)} problem(s):\n{lines}\n"
            "Fix them, then run `migrabot check-config` again."
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How an atomic migration is retried when its lock timeout fires."""

    max_attempts: int = 10
    max_total: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class PoolSettings:
    """The runbook's DB_POOL_* settings (milliseconds as in the runbook)."""

    min: int = 2
    max: int = 10
    idle_timeout_ms: int = 30000
    acquire_timeout_ms: int = 60000


@dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    keep_days: float | None = None


@dataclass(frozen=True)
class Environment:
    name: str
    database_url: str
    migrations_dir: Path
    backup_dir: Path
    aliases: tuple[str, ...] = ()
    direct_url: str | None = None
    channel: str | None = None
    approvers: tuple[str, ...] = ()
    required_approvals: int = 0
    allow_self_approval: bool = True
    confirm_by_typing: bool = False
    allow_no_backup: bool = False  # the CLI's --no-backup is refused unless this is set
    requires: tuple[str, ...] = ()
    requesters: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    health_url: str | None = None
    pgbouncer_admin_url: str | None = None
    shadow_url: str | None = None  # where drift checks make their scratch database (default: the same server)
    drift_check: bool = False  # true by default for prod/production (set in _build_environment)
    drift_action: str = "block"  # "block" or "warn": what a drifted schema does to a /migrate run's checklist
    drift_cron: str | None = None  # a scheduled drift check, posted only when the findings changed
    rehearsal_url: str | None = None  # where rehearsals restore their scratch copy (default: the same server)
    require_rehearsal: bool = False  # a fresh, successful rehearsal is a checklist item before Run
    verify_queries: tuple[str, ...] = ()  # SQL run after a migration to verify the database answers
    lock_timeout: float = 1.0
    statement_timeout: float | None = None
    advisory_lock_timeout: float = 10.0
    connect_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pool: PoolSettings = field(default_factory=PoolSettings)
    backup_jobs: int = 0
    backup_free_margin: float = 1.5
    retention: Retention = field(default_factory=Retention)
    approval_expiry: float = 4 * 3600.0
    approval_reminder: float | None = 30 * 60.0
    report_cron: str | None = None
    health_cron: str | None = None
    long_query_threshold: float = 60.0

    @property
    def migration_url(self) -> str:
        """The URL migrations and backups use: ``direct_url`` when the app goes through pgBouncer."""
        return self.direct_url or self.database_url

    @property
    def is_production(self) -> bool:
        """Named (or aliased) ``prod``/``production``, in any case: the stricter defaults apply."""
        return _is_prod_name(self.names())

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _is_prod_name(names: tuple[str, ...] | list[str]) -> bool:
    return any(n.lower() in PROD_NAMES for n in names)


@dataclass(frozen=True)
class Config:
    environments: dict[str, Environment]
    state_path: Path = Path("migrabot.sqlite3")
    timezone: str = "UTC"
    #: ``[state] url``: a PostgreSQL state store shared by several replicas (None: the SQLite file)
    state_url: str | None = None
    #: ``[state] leader_lease``: seconds a dead leader or run owner is waited for before another replica acts
    leader_lease: float = 15.0
    approve_reactions: tuple[str, ...] = ("white_check_mark",)
    reject_reactions: tuple[str, ...] = ("x",)
    lint_exclude: tuple[str, ...] = ()
    source: str = "defaults"

    def environment(self, name: str) -> Environment | None:
        """Find an environment by its name or one of its aliases (case-insensitive)."""
        wanted = name.strip().lower()
        for env in self.environments.values():
            if wanted in (n.lower() for n in env.names()):
                return env
        return None

    def environment_names(self) -> list[str]:
        return list(self.environments)

    @property
    def state_target(self) -> str | Path:
        """What :func:`state.store.open_store` opens: ``[state] url`` when set, else ``[state] path``."""
        return self.state_url or self.state_path

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration with every password and token redacted."""
        data = asdict(self)
        return redact_obj(_jsonable(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- value parsers ----------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|m|min|mins|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "m": 60.0, "min": 60.0,
          "mins": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"1s"``, ``"250ms"``, ``"5min"``, ``"2h"``.

    >>> parse_duration("250ms"), parse_duration(3), parse_duration("5min")
    (0.25, 3.0, 300.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like \"1s\" or \"5min\", got {value!r}")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expected a finite duration, got {value}")
        if value < 0:
            raise ValueError(f"expected a positive duration, got {value}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f'expected a duration like "1s" or "5min", got "{value}"')


def check_postgres_url(url: str) -> str | None:
    """Return a problem with a PostgreSQL URL, or None when it looks usable."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        return f"malformed URL ({exc})"
    if parts.scheme not in ("postgres", "postgresql"):
        return f'expected a postgresql:// URL, got scheme "{parts.scheme or "(none)"}"'
    host = parts.hostname or parse_qs(parts.query).get("host", [None])[0]
    if not host:
        return "the URL has no host"
    if not parts.path.strip("/") and not parse_qs(parts.query).get("dbname"):
        return "the URL names no database (postgresql://user@host:5432/DBNAME)"
    return None


def url_has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password) or "password=" in urlsplit(url).query
    except ValueError:
        return False


# --- the schema -------------------------------------------------------------------------------


@dataclass
class _Ctx:
    environ: Mapping[str, str]
    problems: list[Problem]
    warnings: list[Problem]
    base_dir: Path

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _resolve_env_ref(value: Any, path: str, ctx: _Ctx) -> Any:
    """``env:NAME`` reads the environment variable NAME (secrets never live in the file)."""
    if isinstance(value, str) and value.startswith("env:"):
        var = value[4:].strip()
        if not var:
            ctx.problem(path, '"env:" needs a variable name, e.g. "env:DATABASE_URL"')
            return None
        if var not in ctx.environ or ctx.environ[var] == "":
            ctx.problem(path, f"environment variable {var} is not set")
            return None
        return ctx.environ[var]
    return value


def _str(value: Any, path: str, ctx: _Ctx) -> str | None:
    value = _resolve_env_ref(value, path, ctx)
    if value is None:
        return None
    if not isinstance(value, str):
        ctx.problem(path, f"expected a string, got {_type_name(value)}")
        return None
    return value


def _int(value: Any, path: str, ctx: _Ctx, minimum: int = 0, maximum: int = 2**31 - 1) -> int | None:
    value = _resolve_env_ref(value, path, ctx)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,30}\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        ctx.problem(path, f"expected an integer, got {_type_name(value)}")
        return None
    if value < minimum:
        ctx.problem(path, f"expected an integer of at least {minimum}, got {value}")
        return None
    if value > maximum:
        ctx.problem(path, f"expected an integer of at most {maximum}, got {value}")
        return None
    return value


def _float(value: Any, path: str, ctx: _Ctx, minimum: float = 0.0, maximum: float = 1e9) -> float | None:
    value = _resolve_env_ref(value, path, ctx)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, int | float) or isinstance(value, bool):
        ctx.problem(path, f"expected a number, got {_type_name(value)}")
        return None
    if not math.isfinite(value):
        ctx.problem(path, f"expected a finite number, got {value}")
        return None
    if value < minimum:
        ctx.problem(path, f"expected a number of at least {minimum:g}, got {value:g}")
        return None
    if value > maximum:
        ctx.problem(path, f"expected a number of at most {maximum:g}, got {value:g}")
        return None
    return float(value)


def _bool(value: Any, path: str, ctx: _Ctx) -> bool | None:
    value = _resolve_env_ref(value, path, ctx)
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        ctx.problem(path, f"expected true or false, got {_type_name(value)}")
        return None
    return value


def _drift_check(value: Any, path: str, ctx: _Ctx) -> bool | str | None:
    """``drift_check``: true or "block" (a drifted schema blocks Run), "warn" (it is shown, Run is not
    held), false (no check).

    >>> c = _Ctx({}, [], [], Path("."))
    >>> _drift_check(True, "d", c), _drift_check("warn", "d", c), _drift_check("loud", "d", c), len(c.problems)
    (True, 'warn', None, 1)
    """
    value = _resolve_env_ref(value, path, ctx)
    if isinstance(value, str) and value.lower() in ("block", "warn"):
        return value.lower()
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return _bool(value, path, ctx)
    if value is not None:
        ctx.problem(path, f'expected true, false, "block" or "warn", got {value!r}')
    return None


def _show_seconds(seconds: float) -> str:
    """A duration for a message, in the unit people wrote it in.

    >>> _show_seconds(0.25), _show_seconds(90), _show_seconds(2 * 86400)
    ('250 ms', '90 s', '2 days')
    """
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    if seconds < 86400:
        return f"{seconds:g} s"
    return f"{seconds / 86400:.3g} days"


def _duration(value: Any, path: str, ctx: _Ctx, *, minimum: float = 0.0, maximum: float = MAX_DURATION,
              too_small: str = "") -> float | None:
    """A finite duration in seconds between ``minimum`` and ``maximum`` (``too_small`` says why the floor)."""
    value = _resolve_env_ref(value, path, ctx)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        ctx.problem(path, str(exc))
        return None
    if seconds > maximum:
        ctx.problem(path, f"{_show_seconds(seconds)} is too long: at most {_show_seconds(maximum)}")
        return None
    if seconds < minimum:
        ctx.problem(path, too_small or f"expected at least {_show_seconds(minimum)}, got {_show_seconds(seconds)}")
        return None
    return seconds


def _pg_timeout(value: Any, path: str, ctx: _Ctx, *, zero: str) -> float | None:
    """A duration sent to PostgreSQL as a setting: whole milliseconds from 1 to 2147483647.

    PostgreSQL reads 0 as "no limit", so a value that rounds to 0 ms is refused with ``zero``,
    which says what that would mean here.
    """
    seconds = _duration(value, path, ctx, maximum=float("inf"))
    if seconds is None:
        return None
    ms = round(seconds * 1000)
    if ms > PG_MAX_MS:
        ctx.problem(path, f"{_show_seconds(seconds)} is more than PostgreSQL accepts for a timeout setting "
                          f"(at most {PG_MAX_MS} ms, about 24.8 days)")
        return None
    if ms < 1:
        ctx.problem(path, f"{zero}; give at least 1 ms")
        return None
    return seconds


def _optional_pg_timeout(value: Any, path: str, ctx: _Ctx) -> float | None:
    """A PostgreSQL timeout setting where 0, "off" or false means "none"."""
    if value in (False, 0, "off", "none", "0"):
        return None
    return _pg_timeout(value, path, ctx, zero='expected at least 1 ms (or "off" for no limit)')


def _optional_duration(value: Any, path: str, ctx: _Ctx) -> float | None:
    """A duration where 0, "off" or false means "none"."""
    if value in (False, 0, "off", "none", "0"):
        return None
    return _duration(value, path, ctx)


def _str_list(value: Any, path: str, ctx: _Ctx) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        ctx.problem(path, f"expected a list of strings, got {_type_name(value)}")
        return None
    return tuple(v.strip() for v in value if v.strip())


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")


def _slack_ids(value: Any, path: str, ctx: _Ctx, *, groups: bool) -> tuple[str, ...] | None:
    """Slack user ids (``U…``/``W…``) and, where ``groups``, user-group ids (``S…``)."""
    ids = _str_list(value, path, ctx)
    if ids is None:
        return None
    for i, item in enumerate(ids):
        if _SLACK_USER.match(item) or (groups and _SLACK_GROUP.match(item)):
            continue
        what = "a Slack user id (U…) or user-group id (S…)" if groups else "a Slack user id (U…)"
        ctx.problem(f"{path}[{i}]", f'expected {what}, got "{item}"; a profile\'s "Copy member ID" gives a '
                    "user id, a user group's page URL ends in its id")
    return ids


def _pg_url(value: Any, path: str, ctx: _Ctx) -> str | None:
    url = _str(value, path, ctx)
    if url is None:
        return None
    register_secret(_password_of(url))
    if url.startswith("env:"):
        ctx.problem(path, 'expected a URL; "env:" must name a variable holding the URL, not another "env:"')
        return None
    problem = check_postgres_url(url)
    if problem:
        ctx.problem(path, f"{problem}: {redact(url)}")
        return None
    if url_has_password(url) and not (isinstance(value, str) and value.startswith("env:")):
        ctx.warnings.append(Problem(
            path, "the URL holds a literal password; fine for local use, but put it in an "
            'environment variable ("env:NAME") for shared configurations'))
    return url


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _http_url(value: Any, path: str, ctx: _Ctx) -> str | None:
    url = _str(value, path, ctx)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        ctx.problem(path, f"malformed URL ({exc})")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        ctx.problem(path, f"expected an http:// or https:// URL, got {redact(url)}")
        return None
    return url


def _path(value: Any, path: str, ctx: _Ctx) -> Path | None:
    s = _str(value, path, ctx)
    if s is None:
        return None
    p = Path(s).expanduser()
    return p if p.is_absolute() else (ctx.base_dir / p)


def _file_path(value: Any, path: str, ctx: _Ctx) -> Path | None:
    """A path to a file the bot creates or writes: not a directory, inside one."""
    p = _path(value, path, ctx)
    if p is None:
        return None
    if p.is_dir():
        ctx.problem(path, f"{p} is a directory; name a file inside it, e.g. \"{p / 'migrabot.sqlite3'}\"")
        return None
    if p.parent.exists() and not p.parent.is_dir():
        ctx.problem(path, f"{p.parent} is a file, not a folder: {p} cannot be created there")
        return None
    return p


def _dir_path(value: Any, path: str, ctx: _Ctx) -> Path | None:
    """A path to a folder (it may not exist yet, but it must not be a file)."""
    p = _path(value, path, ctx)
    if p is None:
        return None
    if p.exists() and not p.is_dir():
        ctx.problem(path, f"{p} is a file, not a folder: point it at a folder")
        return None
    return p


def _cron(value: Any, path: str, ctx: _Ctx) -> str | None:
    s = _str(value, path, ctx)
    if s is None:
        return None
    if len(s.split()) != 5:
        ctx.problem(path, f'expected a cron expression with 5 fields like "0 9 * * 1-5", got "{s}"')
        return None
    try:
        # imported here: APScheduler is needed only where a cron is configured, and every CLI command
        # loads the configuration (start-up speed)
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(s)
    except ValueError as exc:
        ctx.problem(path, f'invalid cron expression "{s}": {exc}')
        return None
    return s


Parser = Callable[[Any, str, _Ctx], Any]

_ENV_KEYS: dict[str, Parser] = {
    "aliases": _str_list,
    "database_url": _pg_url,
    "direct_url": _pg_url,
    "migrations_dir": _dir_path,
    "backup_dir": _dir_path,
    "channel": _str,
    "approvers": lambda v, p, c: _slack_ids(v, p, c, groups=True),
    "required_approvals": lambda v, p, c: _int(v, p, c, maximum=MAX_APPROVALS),
    "allow_self_approval": _bool,
    "confirm_by_typing": _bool,
    "allow_no_backup": _bool,
    "requires": _str_list,
    "requesters": lambda v, p, c: _slack_ids(v, p, c, groups=False),
    "operators": lambda v, p, c: _slack_ids(v, p, c, groups=False),
    "health_url": _http_url,
    "pgbouncer_admin_url": _pg_url,
    "shadow_url": _pg_url,
    "drift_check": _drift_check,
    "drift_cron": _cron,
    "rehearsal_url": _pg_url,
    "require_rehearsal": _bool,
    "verify_queries": _str_list,
    # sent to PostgreSQL as settings (SET lock_timeout …; the monitoring queries' statement_timeout)
    "lock_timeout": lambda v, p, c: _pg_timeout(
        v, p, c, zero="0 turns the timeout off (PostgreSQL reads lock_timeout = 0 as \"wait forever\"), so a "
                      "blocked migration would stall the application's queries behind it"),
    "statement_timeout": _optional_pg_timeout,
    "connect_timeout": lambda v, p, c: _pg_timeout(
        v, p, c, zero="0 would never connect (every attempt would time out at once)"),
    "advisory_lock_timeout": _duration,
    "backup_jobs": lambda v, p, c: _int(v, p, c, maximum=MAX_BACKUP_JOBS),
    "backup_free_margin": lambda v, p, c: _float(v, p, c, minimum=1.0, maximum=MAX_FREE_MARGIN),
    "approval_expiry": lambda v, p, c: _duration(v, p, c, minimum=1.0,
                                                 too_small="expected at least 1 s: 0 would expire every "
                                                           "approval the moment it is given"),
    "approval_reminder": _optional_duration,
    "report_cron": _cron,
    "health_cron": _cron,
    "long_query_threshold": _duration,
    # the runbook's pool variables, by their own names
    "DB_POOL_MIN": lambda v, p, c: _int(v, p, c, maximum=MAX_POOL_SIZE),
    "DB_POOL_MAX": lambda v, p, c: _int(v, p, c, minimum=1, maximum=MAX_POOL_SIZE),
    "DB_POOL_IDLE_TIMEOUT": lambda v, p, c: _int(v, p, c, maximum=PG_MAX_MS),
    "DB_POOL_ACQUIRE_TIMEOUT": lambda v, p, c: _int(v, p, c, maximum=PG_MAX_MS),
}
_POOL_KEYS = ("DB_POOL_MIN", "DB_POOL_MAX", "DB_POOL_IDLE_TIMEOUT", "DB_POOL_ACQUIRE_TIMEOUT")
_RETRY_KEYS: dict[str, Parser] = {
    "max_attempts": lambda v, p, c: _int(v, p, c, minimum=1, maximum=MAX_ATTEMPTS),
    "max_total": _duration,
    "base_delay": _duration,
    "max_delay": _duration,
}
_RETENTION_KEYS: dict[str, Parser] = {
    "keep_last": lambda v, p, c: _int(v, p, c, minimum=1, maximum=MAX_KEEP_LAST),
    "keep_days": lambda v, p, c: _float(v, p, c, maximum=MAX_KEEP_DAYS),
}
# sub-tables of an environment: [environments.NAME.retry], [environments.NAME.retention]
_TABLES = {"retry": _RETRY_KEYS, "retention": _RETENTION_KEYS}
_REQUIRED_ENV_KEYS = ("database_url",)
_TOP_KEYS = {"state", "environments", "bot", "slack", "lint"}
_STATE_KEYS: dict[str, Parser] = {
    "path": _file_path, "url": _pg_url,
    "leader_lease": lambda v, p, c: _duration(v, p, c, minimum=1.0, maximum=3600.0,
                                              too_small="at least 1 s: a shorter lease flaps on a busy host"),
}
_BOT_KEYS: dict[str, Parser] = {"timezone": _str}
_SLACK_KEYS: dict[str, Parser] = {"approve_reactions": _str_list, "reject_reactions": _str_list}
_LINT_KEYS: dict[str, Parser] = {"exclude": _str_list}

# Keys people try to put in the file that must come from elsewhere: say where instead of "unknown".
_SECRET_KEY_HINT = re.compile(r"token|secret|password|passwd", re.I)
_MISPLACED = {
    "retry": "goes under an environment: [environments.NAME.retry]",
    "retention": "goes under an environment: [environments.NAME.retention]",
}


def _unknown_key(key: str, known: list[str]) -> str:
    if _SECRET_KEY_HINT.search(key):
        return ("secrets never live in the file: Slack tokens come only from SLACK_BOT_TOKEN, "
                "SLACK_APP_TOKEN and SLACK_SIGNING_SECRET, and database passwords belong in the "
                'URL read from an environment variable ("env:NAME")')
    if key in _MISPLACED:
        return f"unknown key here; {key} {_MISPLACED[key]}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown key ({hint}known keys: {', '.join(sorted(known))})"


def _parse_table(raw: Any, keys: dict[str, Parser], path: str, ctx: _Ctx) -> dict[str, Any]:
    if not isinstance(raw, dict):
        ctx.problem(path, f"expected a table, got {_type_name(raw)}")
        return {}
    out: dict[str, Any] = {}
    tables = _TABLES if keys is _ENV_KEYS else {}
    for key, value in raw.items():
        key_path = f"{path}.{key}"
        if key in tables:
            out[key] = _parse_table(value, tables[key], key_path, ctx)
            continue
        parser = keys.get(key)
        if parser is None:
            ctx.problem(key_path, _unknown_key(key, [*keys, *tables]))
            continue
        parsed = parser(value, key_path, ctx)
        if parsed is not None:
            out[key] = parsed
    return out


def _pool_from(values: dict[str, Any], environ: Mapping[str, str], path: str, ctx: _Ctx) -> PoolSettings:
    """Pool settings: the environment's keys, else the runbook's DB_POOL_* variables, else defaults."""
    defaults = PoolSettings()
    result = {}
    for key, attr, default in (
        ("DB_POOL_MIN", "min", defaults.min),
        ("DB_POOL_MAX", "max", defaults.max),
        ("DB_POOL_IDLE_TIMEOUT", "idle_timeout_ms", defaults.idle_timeout_ms),
        ("DB_POOL_ACQUIRE_TIMEOUT", "acquire_timeout_ms", defaults.acquire_timeout_ms),
    ):
        if key in values:
            result[attr] = values[key]
        elif environ.get(key):
            # the runbook's variables apply to every environment that does not set its own
            parsed = _ENV_KEYS[key](environ[key], f"{path}.{key} (from ${key})", ctx)
            result[attr] = default if parsed is None else parsed
        else:
            result[attr] = default
    if result["min"] > result["max"]:
        ctx.problem(path, f"DB_POOL_MIN ({result['min']}) is larger than DB_POOL_MAX ({result['max']})")
    return PoolSettings(**result)


def _build_environment(name: str, values: dict[str, Any], ctx: _Ctx) -> Environment | None:
    path = f"environments.{name}"
    missing = [k for k in _REQUIRED_ENV_KEYS if k not in values]
    for key in missing:
        # an unresolved env: reference was already reported under its own key
        if not any(p.path == f"{path}.{key}" for p in ctx.problems):
            ctx.problem(f"{path}.{key}", "missing (required)")
    if missing:
        return None
    is_prod = _is_prod_name([name, *values.get("aliases", ())])
    pool = _pool_from(values, ctx.environ, path, ctx)
    kwargs = {k: v for k, v in values.items() if not k.startswith("DB_POOL_")}
    kwargs.pop("retry", None)
    kwargs.pop("retention", None)
    kwargs.setdefault("migrations_dir", ctx.base_dir / "prisma" / "migrations")
    kwargs.setdefault("backup_dir", ctx.base_dir / "backups")
    kwargs.setdefault("allow_self_approval", not is_prod)
    kwargs.setdefault("confirm_by_typing", is_prod)
    kwargs.setdefault("drift_check", is_prod)
    if isinstance(kwargs["drift_check"], str):  # "block" or "warn": the check is on, and says what it does
        kwargs["drift_action"] = kwargs["drift_check"]
        kwargs["drift_check"] = True
    retry = RetryPolicy(**values.get("retry", {}))
    if retry.base_delay > retry.max_delay:
        ctx.problem(f"{path}.retry.base_delay", f"base_delay ({retry.base_delay:g}s) is longer than "
                    f"max_delay ({retry.max_delay:g}s); make max_delay at least base_delay")
    retention = Retention(**values.get("retention", {}))
    if kwargs.get("required_approvals", 0) > 0 and not kwargs.get("approvers"):
        ctx.problem(f"{path}.approvers", f"required_approvals is {kwargs['required_approvals']} "
                    "but no approvers are listed")
    return Environment(name=name, pool=pool, retry=retry, retention=retention, **kwargs)


def _check_cross_references(declared: dict[str, dict[str, Any]], ctx: _Ctx) -> None:
    """Names and aliases are unique (case-insensitive); every ``requires`` names an environment.

    ``declared`` holds every environment's parsed values, including those with other problems,
    so that one broken environment does not make the others' references look wrong.
    """
    seen: dict[str, str] = {}
    for name, values in declared.items():
        for i, alias in enumerate((name, *values.get("aliases", ()))):
            key = alias.lower()
            where = f"environments.{name}" + (f".aliases[{i - 1}]" if i else "")
            if key in seen and seen[key] != name:
                ctx.problem(where, f'the name "{alias}" is already used by environment "{seen[key]}"')
            elif key in seen and i:
                ctx.problem(where, f'the alias "{alias}" is given twice')
            seen.setdefault(key, name)
    for name, values in declared.items():
        for i, req in enumerate(values.get("requires", ())):
            target = seen.get(req.lower())
            if target is None:
                ctx.problem(f"environments.{name}.requires[{i}]",
                            f'"{req}" names no environment (known: {", ".join(declared)})')
            elif target == name:
                ctx.problem(f"environments.{name}.requires[{i}]", "an environment cannot require itself")


def check_config_data(data: dict[str, Any], *, environ: Mapping[str, str] | None = None,
                      base_dir: Path | None = None, source: str = "(data)",
                      ) -> tuple[Config | None, list[Problem], list[Problem]]:
    """Validate parsed TOML; return ``(config or None, problems, warnings)``."""
    ctx = _Ctx(environ=os.environ if environ is None else environ, problems=[], warnings=[],
               base_dir=base_dir or Path.cwd())
    for key in data:
        if key not in _TOP_KEYS:
            ctx.problem(key, _unknown_key(key, sorted(_TOP_KEYS)))
    state = _parse_table(data.get("state", {}), _STATE_KEYS, "state", ctx)
    bot = _parse_table(data.get("bot", {}), _BOT_KEYS, "bot", ctx)
    slack = _parse_table(data.get("slack", {}), _SLACK_KEYS, "slack", ctx)
    lint = _parse_table(data.get("lint", {}), _LINT_KEYS, "lint", ctx)
    raw_envs = data.get("environments")
    envs: dict[str, Environment] = {}
    if raw_envs is None:
        ctx.problem("environments", "missing: define at least one [environments.NAME] table")
    elif not isinstance(raw_envs, dict):
        ctx.problem("environments", f"expected a table, got {_type_name(raw_envs)}")
    else:
        if not raw_envs:
            ctx.problem("environments", "empty: define at least one [environments.NAME] table")
        declared: dict[str, dict[str, Any]] = {}
        for name, raw in raw_envs.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
                ctx.problem(f"environments.{name}", "environment names use letters, digits, - and _ only")
                continue
            if not isinstance(raw, dict):
                ctx.problem(f"environments.{name}", f"expected a table, got {_type_name(raw)}")
                continue
            values = _parse_table(raw, _ENV_KEYS, f"environments.{name}", ctx)
            declared[name] = values
            env = _build_environment(name, values, ctx)
            if env is not None:
                envs[name] = env
        _check_cross_references(declared, ctx)
    timezone = bot.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except Exception:
        ctx.problem("bot.timezone", f'unknown time zone "{timezone}" (e.g. "Europe/Berlin", "UTC")')
    if ctx.problems:
        return None, ctx.problems, ctx.warnings
    config = Config(
        environments=envs,
        state_path=state.get("path", ctx.base_dir / "migrabot.sqlite3"),
        state_url=state.get("url"),
        leader_lease=state.get("leader_lease", 15.0),
        timezone=timezone,
        approve_reactions=slack.get("approve_reactions", ("white_check_mark",)),
        reject_reactions=slack.get("reject_reactions", ("x",)),
        lint_exclude=lint.get("exclude", ()),
        source=source,
    )
    return config, ctx.problems, ctx.warnings


def check_config_text(text: str, **kwargs: Any) -> tuple[Config | None, list[Problem], list[Problem]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem("", f"not valid TOML: {exc}")], []
    except RecursionError:  # tomllib recurses once per level of [ or {
        return None, [_too_deep_problem(text)], []
    return check_config_data(data, **kwargs)


def _too_deep_problem(text: str) -> Problem:
    found = locate_deep_nesting(text, MAX_NESTING)
    what = (f"values nested more than {MAX_NESTING} levels deep cannot be read; a value here is a string, "
            "a number, true/false, a list of strings or a table")
    if found is None:
        return Problem("", f"the file nests values too deeply: {what}")
    key_path, line = found
    return Problem(key_path, f"nested more than {MAX_NESTING} levels deep (line {line}): {what}")


def locate_deep_nesting(text: str, limit: int) -> tuple[str, int] | None:
    """The key path and line of the first value nested deeper than ``limit`` (a TOML skim, no recursion).

    >>> locate_deep_nesting('[environments.dev]\\nname = "a[b"\\naliases = [[[["x"]]]]\\n', 3)
    ('environments.dev.aliases', 3)
    """
    table, key, depth, line, i, n = "", "", 0, 1, 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if c == "\n":
            line, line_start, i = line + 1, True, i + 1
        elif c in " \t\r,":
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    line += 1
                j += 1
            i, line_start = j + len(quote), False
        elif depth == 0 and line_start and c == "[":  # a [table] or [[array]] header
            end = text.find("\n", i)
            header = text[i: n if end < 0 else end].split("#")[0]
            table = _plain_key(header.strip().strip("[]"))
            i = n if end < 0 else end
        elif depth == 0 and line_start:  # key = value
            eq = text.find("=", i)
            if eq < 0:
                return None
            key, i, line_start = _plain_key(text[i:eq]), eq + 1, False
        elif c in "[{":
            depth += 1
            if depth > limit:
                return (f"{table}.{key}" if table else key), line
            i += 1
        elif c in "]}":
            depth, i = max(depth - 1, 0), i + 1
        else:
            i, line_start = i + 1, False
    return None


def _plain_key(raw: str) -> str:
    """``a . "b" . c`` as ``a.b.c``."""
    return ".".join(part.strip().strip("\"'") for part in raw.split("."))


def config_from_runbook_env(environ: Mapping[str, str], base_dir: Path) -> dict[str, Any] | None:
    """The runbook's variables as a configuration: DATABASE_URL, NODE_ENV, DB_POOL_*."""
    if not environ.get("DATABASE_URL"):
        return None
    name = environ.get("NODE_ENV") or "development"
    return {"environments": {name: {"database_url": "env:DATABASE_URL"}}}


def resolve_config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read and whether the user named it (a named file must exist)."""
    if path:
        return Path(path), True
    if environ.get("MIGRABOT_CONFIG"):
        return Path(environ["MIGRABOT_CONFIG"]), True
    return Path(DEFAULT_CONFIG_PATH), False


def check_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                 ) -> tuple[Config | None, list[Problem], list[Problem]]:
    """Find, read and validate the configuration; never raises for user errors."""
    environ = os.environ if environ is None else environ
    register_env_secrets(environ)  # Slack tokens are masked in every message from here on
    file, named = resolve_config_path(path, environ)
    if file.is_dir():
        return None, [Problem("", f"{file} is a directory, not a configuration file; name the file itself, "
                              f"e.g. --config {file / DEFAULT_CONFIG_PATH}")], []
    if file.is_file():
        try:
            raw = file.read_bytes()
        except OSError as exc:
            return None, [Problem("", f"cannot read {file}: {exc.strerror}")], []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [_not_utf8_problem(file, raw, exc)], []
        return check_config_text(text, environ=environ, base_dir=file.resolve().parent,
                                 source=str(file))
    if named:
        return None, [Problem("", f"configuration file {file} does not exist; copy "
                              "migrabot.example.toml there and edit it")], []
    data = config_from_runbook_env(environ, Path.cwd())
    if data is None:
        return None, [Problem("", f"no {DEFAULT_CONFIG_PATH} here and DATABASE_URL is not set; "
                              "copy migrabot.example.toml to migrabot.toml (or pass --config), "
                              "or export DATABASE_URL and NODE_ENV as the runbook does")], []
    return check_config_data(data, environ=environ, base_dir=Path.cwd(),
                             source="environment (DATABASE_URL, NODE_ENV)")


def _not_utf8_problem(file: Path, data: bytes, exc: UnicodeDecodeError) -> Problem:
    """Where the first byte that is not UTF-8 is: its line, and its key path when it is in a value."""
    line = data.count(b"\n", 0, exc.start) + 1
    byte = data[exc.start]
    key_path = ""
    marker = "\ufdd0"  # a noncharacter: in place of the first bad byte, to see which value (if any) holds it
    text = (data[:exc.start].decode("utf-8") + marker + data[exc.end:].decode("utf-8", errors="replace"))
    try:
        key_path = _path_holding(tomllib.loads(text), marker) or ""
    except (tomllib.TOMLDecodeError, RecursionError):
        pass
    return Problem(key_path, f"{file} is not UTF-8 text (byte 0x{byte:02x} on line {line}): save it as UTF-8, "
                             "the only encoding TOML allows")


def _path_holding(value: Any, needle: str, path: str = "") -> str | None:
    if isinstance(value, str):
        return path if needle in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        if needle in str(key):
            return sub
        found = _path_holding(item, needle, sub)
        if found:
            return found
    return None


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
                ) -> Config:
    """Like :func:`check_config` but raises :class:`ConfigError` when there are problems."""
    config, problems, _ = check_config(path, environ)
    if config is None:
        raise ConfigError(problems)
    return config
