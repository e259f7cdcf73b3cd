"""``migrabot rehearse``: apply the pending migrations to a restored copy and say what they lock, and for how long.

    migrabot rehearse prod                         # the newest verified backup
    migrabot rehearse prod --backup 20240101_120000 --json

The live database is only read. Exit 0 when every pending migration applied on the copy, 1 when
one failed there (it says which statement, and why), 2 when the rehearsal could not run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from actions import humanize
from bot.cli import (
    EXIT_NO,
    EXIT_OK,
    add_config_option,
    add_json_option,
    emit,
    environment_from_args,
    run_async,
)

if TYPE_CHECKING:
    from actions.rehearsal import RehearsalResult, RehearsalStep

COLUMNS = ("statement", "lock", "held for", "rewrite", "rows", "time")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rehearse", help="restore a backup into a scratch copy and apply the pending migrations "
                                        "there: locks, hold times, rewrites, rows (the live database is only read)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    p.add_argument("--backup", metavar="ID", help="the backup to restore (default: the newest verified one)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_rehearse)


def _table(rows: list[dict[str, str]]) -> list[str]:
    cells = [list(COLUMNS)] + [[row[c] for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def describe_rehearsal(result: RehearsalResult) -> str:
    lines = [f"rehearsal of {result.environment} on {result.server} (backup {result.backup_id}, "
             f"{humanize.age(result.started_at.timestamp() - result.backup_created_at.timestamp())} old)"]
    if result.restore_tested:
        lines.append(result.restore_tested)
    if result.caught_up:
        lines.append(f"caught up first (applied live after the backup): {', '.join(result.caught_up)}")
    if not result.pending:
        lines.append("nothing pending: only the restore was tested")
    for migration in result.migrations:
        lines.append("")
        lines.append(f"{migration.name}: {migration.verdict}")
        if migration.statements:
            lines.extend("  " + line for line in _table([s.row() for s in migration.statements]))
        if migration.status == "failed" and migration.error:
            lines.extend("  " + line for line in migration.error.splitlines())
    lines.append("")
    lines.append(f"the scratch copy {result.scratch_database} was "
                 + ("dropped" if result.dropped else "NOT dropped: the next rehearsal drops it"))
    if result.leftovers_dropped:
        lines.append(f"left over by earlier rehearsals, dropped: {', '.join(result.leftovers_dropped)}")
    return "\n".join(lines)


def run_rehearse(args: argparse.Namespace) -> int:
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.rehearsal import rehearse_environment

    _, env = environment_from_args(args)

    def step(s: RehearsalStep) -> None:
        if not args.json and s.status != "started":
            detail = f": {s.detail}" if s.detail else ""
            print(f"{s.name} {s.status} ({s.duration:.1f}s){detail}", file=sys.stderr, flush=True)

    # run_async turns SIGTERM into a cancellation: the scratch copy is dropped on the way out
    result = run_async(rehearse_environment(env, backup_id=args.backup, on_step=step))
    emit(args, {"environment": env.name, **result.to_dict()}, lambda: describe_rehearsal(result))
    return EXIT_OK if result.ok else EXIT_NO
