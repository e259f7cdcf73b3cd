"""The runbook's pre-migration checklist: its eight items, and when an item counts as done.

The bot's own checks of each item are in :mod:`bot.rules.checks`.

Each item ends in one of five states: ``pass`` (the bot proved it, and says how), ``na``
(does not apply here, and why), ``fail`` (the bot found a problem: it blocks the run until a
re-check passes), ``warn`` (a problem the environment only wants shown: it does not block) or
``manual`` (a person ticks it; every tick is attributed and audited).

Two more items exist where the environment asks for them (their check is then in the run's
checks): "Rehearsal" (``require_rehearsal``) and "Schema matches the migrations" (``drift_check``).

    >>> [i.key for i in ITEMS]
    ['review', 'staging', 'backup', 'downtime', 'rollback_plan', 'notification', 'monitoring', 'pool']
    >>> [i.key for i in items_for({"drift": {"status": "pass", "reason": ""}})][-1]
    'drift'
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
#: items the bot ticks itself, present only where the environment's policy asks for them
EXTRA_ITEMS = (
    Item("rehearsal", "Rehearsal", "a fresh, successful rehearsal of these migrations on a restored copy"),
    Item("drift", "Schema matches the migrations", "the live schema is what the applied migrations build"),
)
LABELS = {i.key: i.label for i in (*ITEMS, *EXTRA_ITEMS)}


def items_for(checks: dict[str, dict[str, str]]) -> tuple[Item, ...]:
    """The runbook's items, and the policy items this run's checks include."""
    return ITEMS + tuple(i for i in EXTRA_ITEMS if i.key in checks)


def result(status: str, reason: str) -> dict[str, str]:
    return {"status": status, "reason": redact(reason)}


def is_done(key: str, checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> bool:
    check = checks.get(key, {"status": "pending"})
    if check["status"] in ("pass", "na", "warn"):
        return True
    if check["status"] == "manual":
        return bool(ticks.get(key, {}).get("checked"))
    return False


def summary(checks: dict[str, dict[str, str]], ticks: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(items done, items in all)."""
    keys = [i.key for i in items_for(checks)]
    return sum(is_done(k, checks, ticks) for k in keys), len(keys)
