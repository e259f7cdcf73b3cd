"""``migrabot drift``: does the live schema match what the migrations say?

    $ migrabot drift prod                                   # exit 0 in sync, 1 drifted, 2 could not check
    $ migrabot drift prod --json
    $ migrabot drift prod --write-fix prisma/migrations     # the generated SQL as a new migration folder

The expected schema is built in a scratch database ``<db>__shadow_<timestamp>`` (on the same
server, or on the environment's ``shadow_url``) and dropped afterwards; the live database is
only read. ``--write-fix`` writes ``<DIR>/<timestamp>_fix_drift/migration.sql`` for a person to
review and deploy the normal way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli import add_config_option, add_json_option, emit, environment_from_args, run_async

if TYPE_CHECKING:
    from actions.drift import DriftReport


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="compare the live schema with what the migrations build "
                                     "(exit 0 in sync, 1 drifted, 2 could not check)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    p.add_argument("--write-fix", metavar="DIR", type=Path,
                   help="write the generated SQL as DIR/<timestamp>_fix_drift/migration.sql (never applied)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_drift)


def describe_drift(report: DriftReport, fix_path: Path | None, fix_asked: bool) -> str:
    text = report.describe()
    if fix_asked:
        text += (f"\nwrote {fix_path}: review it, then deploy it like any migration" if fix_path else
                 "\n--write-fix: nothing to write (no difference has generated SQL)")
    return text


def run_drift(args: argparse.Namespace) -> int:
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.drift import check_environment, write_fix_migration

    _, env = environment_from_args(args)
    report = run_async(check_environment(env))
    fix_path = write_fix_migration(report, args.write_fix) if args.write_fix else None
    data = {**report.to_dict(), "fix_migration": str(fix_path) if fix_path else None}
    emit(args, data, lambda: describe_drift(report, fix_path, bool(args.write_fix)))
    return report.exit_code
