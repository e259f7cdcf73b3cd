"""The chat-command parser: ``/migrate``, ``/rollback`` and ``/db`` text into a :class:`Command`.

    >>> from bot.config import check_config_text
    >>> cfg, _, _ = check_config_text('''
    ... [environments.staging]
    ... database_url = "postgresql://u@h/s"
    ... [environments.prod]
    ... aliases = ["production"]
    ... database_url = "postgresql://u@h/p"
    ... ''')
    >>> parse("/migrate", "production", cfg)
    Command(command='/migrate', action='run', env='prod', args={})
    >>> parse("/migrate", "plan staging", cfg).action
    'plan'
    >>> parse("/migrate", "stagin", cfg)
    Traceback (most recent call last):
    ...
    bot.command_parser.UsageError: unknown environment "stagin"; environments: staging, prod (production)

Parsing is pure: nothing happens for a command that does not parse, and the person gets
the usage text back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.config import Config, parse_duration


class UsageError(Exception):
    """The command text does not parse; the message says why, the usage says what works."""


@dataclass
class Command:
    command: str
    action: str
    env: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


MIGRATE_USAGE = """\
*`/migrate` — run the runbook's migration procedure*
• `/migrate ENV` — start a run: checklist, approvals, backup, apply, verify
• `/migrate plan ENV` — pending migrations and their lint verdict, no run
• `/migrate status ENV` — applied, pending, failed, modified migrations
• `/migrate history ENV` — the last runs: who, when, result, duration
• `/migrate rehearse ENV` — apply the pending migrations to a restored copy: locks, hold times, rewrites, rows
• `/migrate abort ENV` — abort the open run (before or between migrations)
• `/migrate resolve ENV NAME applied|rolled-back` — fix the migration table (Prisma's `migrate resolve`)
• `/migrate ENV at 22:00` or `/migrate ENV in 2h` — schedule a run into a maintenance window
• `/migrate schedule` — list scheduled runs
• `/migrate help` — this text"""

ROLLBACK_USAGE = """\
*`/rollback` — the runbook's rollback procedures*
• `/rollback ENV` — restore a chosen backup (you will type RESTORE to confirm)
• `/rollback ENV last` — undo the last migration with its `down.sql`/`rollback.sql` (partial rollback)
• `/rollback help` — this text"""

DB_USAGE = """\
*`/db` — monitoring and troubleshooting*
• `/db report ENV` — table sizes, index usage, connections, long queries
• `/db health ENV` — connectivity, migration status, last backup, health URL, pgBouncer
• `/db blockers ENV` — who blocks whom, with a Terminate button
• `/db drift ENV` — does the schema match the migrations? what differs, and the way back
• `/db help` — this text"""

USAGE = {"/migrate": MIGRATE_USAGE, "/rollback": ROLLBACK_USAGE, "/db": DB_USAGE}


def environments_hint(config: Config) -> str:
    parts = []
    for env in config.environments.values():
        parts.append(env.name + (f" ({', '.join(env.aliases)})" if env.aliases else ""))
    return ", ".join(parts)


def _env(config: Config, word: str | None) -> str:
    if not word:
        raise UsageError(f"which environment? environments: {environments_hint(config)}")
    env = config.environment(word)
    if env is None:
        raise UsageError(f'unknown environment "{word}"; environments: {environments_hint(config)}')
    return env.name


def _no_more(words: list[str], command: str) -> None:
    if words:
        raise UsageError(f"unexpected extra words: {' '.join(words)}")


def parse(command: str, text: str, config: Config, *, now: datetime | None = None) -> Command:
    """Parse the text of a slash command. Raises :class:`UsageError`."""
    words = (text or "").split()
    command = command.strip()
    if command == "/migrate":
        return _parse_migrate(words, config, now)
    if command == "/rollback":
        return _parse_rollback(words, config)
    if command == "/db":
        return _parse_db(words, config)
    raise UsageError(f"unknown command {command}")


def _parse_migrate(words: list[str], config: Config, now: datetime | None) -> Command:
    if not words or words[0].lower() in ("help", "-h", "--help"):
        return Command("/migrate", "help")
    first = words[0].lower()
    if first in ("plan", "status", "history", "abort", "rehearse"):
        env = _env(config, words[1] if len(words) > 1 else None)
        _no_more(words[2:], "/migrate")
        return Command("/migrate", first, env)
    if first == "schedule":
        _no_more(words[1:], "/migrate")
        return Command("/migrate", "schedule")
    if first == "resolve":
        if len(words) != 4 or words[3].lower() not in ("applied", "rolled-back"):
            raise UsageError("usage: /migrate resolve ENV MIGRATION_NAME applied|rolled-back")
        env = _env(config, words[1])
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,255}", words[2]):
            raise UsageError(f'"{words[2]}" is not a migration folder name')
        return Command("/migrate", "resolve", env, {"migration": words[2], "as": words[3].lower()})
    env = _env(config, words[0])
    rest = words[1:]
    if not rest:
        return Command("/migrate", "run", env)
    when = parse_when(rest, config.timezone, now)
    return Command("/migrate", "schedule_run", env, {"at": when})


def parse_when(words: list[str], timezone: str, now: datetime | None = None) -> datetime:
    """``at 22:00`` / ``at 2026-12-01 22:00`` / ``in 2h`` → an aware datetime in the future.

    >>> base = datetime(2026, 1, 1, 12, 0, tzinfo=ZoneInfo("UTC"))
    >>> parse_when(["in", "90min"], "UTC", base).isoformat()
    '2026-01-01T13:30:00+00:00'
    >>> parse_when(["at", "11:00"], "UTC", base).isoformat()  # already past today: tomorrow
    '2026-01-02T11:00:00+00:00'
    """
    tz = ZoneInfo(timezone)
    now = (now or datetime.now(tz)).astimezone(tz)
    if len(words) < 2 or words[0].lower() not in ("at", "in"):
        raise UsageError("to schedule a run: `/migrate ENV at 22:00` or `/migrate ENV in 2h`")
    spec = " ".join(words[1:])
    if words[0].lower() == "in":
        try:
            seconds = parse_duration(spec.replace(" ", ""))
        except ValueError:
            raise UsageError(f'cannot read the duration "{spec}"; try "30min" or "2h"') from None
        if seconds <= 0:
            raise UsageError("the delay must be more than zero")
        return now + timedelta(seconds=seconds)
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%H:%M"):
        try:
            parsed = datetime.strptime(spec, fmt)
        except ValueError:
            continue
        if fmt == "%H:%M":
            when = now.replace(hour=parsed.hour, minute=parsed.minute, second=0, microsecond=0)
            if when <= now:
                when += timedelta(days=1)
            return when
        when = parsed.replace(tzinfo=tz)
        if when <= now:
            raise UsageError(f"{spec} ({timezone}) is in the past")
        return when
    raise UsageError(f'cannot read the time "{spec}"; use HH:MM or YYYY-MM-DD HH:MM ({timezone})')


def _parse_rollback(words: list[str], config: Config) -> Command:
    if not words or words[0].lower() in ("help", "-h", "--help"):
        return Command("/rollback", "help")
    env = _env(config, words[0])
    if len(words) == 1:
        return Command("/rollback", "restore", env)
    if words[1].lower() == "last":
        _no_more(words[2:], "/rollback")
        return Command("/rollback", "undo_last", env)
    raise UsageError(f"unexpected extra words: {' '.join(words[1:])}")


def _parse_db(words: list[str], config: Config) -> Command:
    if not words or words[0].lower() in ("help", "-h", "--help"):
        return Command("/db", "help")
    action = words[0].lower()
    if action not in ("report", "health", "blockers", "drift"):
        raise UsageError(f'unknown /db action "{words[0]}"')
    env = _env(config, words[1] if len(words) > 1 else None)
    _no_more(words[2:], "/db")
    return Command("/db", action, env)
