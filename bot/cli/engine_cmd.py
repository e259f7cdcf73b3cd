"""``migrabot status | deploy | resolve``: the migration engine from the command line.

    $ migrabot status prod            # exit 0 when up to date, 1 otherwise
    $ migrabot deploy staging --dry-run
    $ migrabot resolve prod --rolled-back 20240301_bad_migration
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from actions.deploy import DeployEvent, DeployResult, deploy
from actions.resolve import resolve_applied, resolve_rolled_back
from actions.status import MigrationStatus, migration_status
from bot.cli import (
    EXIT_NO,
    EXIT_OK,
    add_config_option,
    add_json_option,
    emit,
    environment_from_args,
    run_async,
)
from bot.redact import redact


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="compare the migrations folder with the database (exit 1 unless up to date)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser("deploy", help="apply pending migrations (no backup: the Slack flow takes one first)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    p.add_argument("--dry-run", action="store_true", help="show what would be applied, change nothing")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_deploy)

    p = sub.add_parser("resolve", help="settle a failed migration (like prisma migrate resolve)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--applied", metavar="NAME", help="record NAME as applied (you completed it by hand)")
    group.add_argument("--rolled-back", metavar="NAME", help="mark NAME's failed run as rolled back (deploy reruns it)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_resolve)


def describe_status(env_name: str, status: MigrationStatus) -> str:
    local = status.local_by_name()
    lines = [f"{env_name}: " + ("up to date" if status.up_to_date else "NOT up to date")]
    lines.append(f"applied: {len(status.applied)}" + (f" (last: {status.last_applied})" if status.last_applied else ""))
    if status.pending:
        lines.append(f"pending ({len(status.pending)}):")
        for name in status.pending:
            m = local.get(name)
            how = ("in a transaction" if m is None or m.transactional
                   else f"OUTSIDE a transaction, statement by statement ({m.non_transactional_reason})")
            lines.append(f"  - {name}: runs {how}")
    for f in status.failed:
        lines.append(f"FAILED: {f.name} (started {f.started_at})")
        if f.logs:
            lines.extend(f"    {line}" for line in f.logs.splitlines())
        lines.append(f"  resolve with: migrabot resolve {env_name} --rolled-back {f.name}   (not in the database; "
                     "deploy reruns it)")
        lines.append(f"            or: migrabot resolve {env_name} --applied {f.name}       (you completed it by hand)")
    for label, names, meaning in (
        ("modified", status.modified, "edited after being applied; restore the original file"),
        ("missing", status.missing, "applied in the database but absent from the folder"),
        ("rolled back", status.rolled_back, "marked rolled back, not applied (pending again)"),
    ):
        if names:
            lines.append(f"{label} ({meaning}):")
            lines.extend(f"  - {n}" for n in names)
    if not status.table_exists:
        lines.append("(no _prisma_migrations table yet: nothing was ever deployed here)")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    _, env = environment_from_args(args)
    status = run_async(migration_status(env.migration_url, env.migrations_dir, timeout=env.connect_timeout))
    emit(args, {"environment": env.name, **status.to_dict()}, lambda: describe_status(env.name, status))
    return EXIT_OK if status.up_to_date else EXIT_NO


def _print_event(event: DeployEvent) -> None:
    print(redact(event.describe()), flush=True)


def describe_deploy(env_name: str, result: DeployResult) -> str:
    if result.dry_run:
        if not result.pending:
            return f"{env_name}: nothing to apply (dry run)"
        lines = [f"{env_name}: would apply {len(result.pending)} migration(s) (dry run, nothing changed):"]
        lines.extend(f"  - {n}" + ("  (outside a transaction)" if n in result.non_transactional else "")
                     for n in result.pending)
        return "\n".join(lines)
    if not result.pending:
        return f"{env_name}: nothing to apply, already up to date"
    parts = [f"{env_name}: applied {len(result.applied)} of {len(result.pending)} migration(s)"]
    if result.failed:
        parts.append(f"FAILED at {result.failed.name}; fix it, then `migrabot resolve {env_name} --rolled-back "
                     f"{result.failed.name}` (or --applied) before deploying again")
    if result.aborted:
        parts.append("stopped on request between migrations; nothing is half-done")
    return "\n".join(parts)


def run_deploy(args: argparse.Namespace) -> int:
    _, env = environment_from_args(args)
    events: list[dict[str, Any]] = []
    as_json = getattr(args, "json", False)

    def on_event(event: DeployEvent) -> None:
        if as_json:
            events.append(event.to_dict())
        else:
            _print_event(event)

    if not as_json and not args.dry_run:
        print("note: no backup was taken (the CLI deploy never takes one; the Slack /deploy does)",
              file=sys.stderr)
    result = run_async(deploy(
        env.migration_url, env.migrations_dir, lock_timeout=env.lock_timeout,
        statement_timeout=env.statement_timeout, retry=env.retry,
        advisory_lock_timeout=env.advisory_lock_timeout, on_event=on_event, dry_run=args.dry_run,
        connect_timeout=env.connect_timeout))
    emit(args, {"environment": env.name, **result.to_dict(), "events": events},
         lambda: describe_deploy(env.name, result))
    return EXIT_OK if result.ok else EXIT_NO


def run_resolve(args: argparse.Namespace) -> int:
    _, env = environment_from_args(args)
    if args.applied:
        name, action = args.applied, "applied"
        message = run_async(resolve_applied(env.migration_url, env.migrations_dir, name,
                                            advisory_lock_timeout=env.advisory_lock_timeout,
                                            timeout=env.connect_timeout))
    else:
        name, action = args.rolled_back, "rolled_back"
        message = run_async(resolve_rolled_back(env.migration_url, env.migrations_dir, name,
                                                advisory_lock_timeout=env.advisory_lock_timeout,
                                                timeout=env.connect_timeout))
    emit(args, {"environment": env.name, "migration": name, "resolved_as": action, "message": message},
         f"{env.name}: {message}")
    return EXIT_OK
