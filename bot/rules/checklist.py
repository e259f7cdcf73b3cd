"""The runbook's pre-migration checklist: its eight items, and when an item counts as done.

The bot's own checks of each item are in :mod:`bot.rules.checks`.

Each item ends in one of four states: ``pass`` (the bot proved it, and says how), ``na``
(does not apply here, and why), ``fail`` (the bot found a problem: it blocks the run until a
re-check passes) or ``manual`` (a person ticks it; every tick is attributed and audited).

    >>> [i.key for i in ITEMS]
    ['review', 'staging', 'backup', 'downtime', 'rollback_plan', 'notification', 'monitoring', 'pool']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.redact import redact


@dataclass(frozen=True)
class Item:
    key: str
    label: str
    hint: str


ITEMS = (
    Item("review", "Review migration files", "every pending migration's SQL is in the thread"),
    Item("staging", "Test on staging", "the environments before this one ran exactly these migrations"),
    Item("backup", "Database backup", "the backup system works; a fresh backup is taken before applying"),
    Item("downtime", "Downtime window", "needed when a migration is not zero-downtime safe"),
    Item("rollback_plan", "Rollback plan", "rollback procedure reviewed; `/rollback ENV` restores a backup"),
    Item("notification", "Team notification", "the team is told of the upcoming migration"),
    Item("monitoring", "Monitor setup", "monitoring and alerting are active"),
    Item("pool", "Connection pool", "pgBouncer is configured and healthy"),
)
ITEM_KEYS = tuple(i.key for i in ITEMS)
LABELS = {i.key: i.label for i in ITEMS}


def result(status: str, reason: str) -> dict[str, str]:
    return {"status": status, "reason": redact(reason)}


def is_done(key: str, checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> bool:
    check = checks.get(key, {"status": "pending"})
    if check["status"] in ("pass", "na"):
        return True
    if check["status"] == "manual":
        return bool(ticks.get(key, {}).get("checked"))
    return False


def summary(checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(items done, items in all)."""
    return sum(is_done(k, checks, ticks) for k in ITEM_KEYS), len(ITEM_KEYS)
