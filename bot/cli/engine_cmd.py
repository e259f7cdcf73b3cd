"""``migrabot status | deploy | resolve``: the migration engine from the command line.

    $ migrabot status prod            # exit 0 when up to date, 1 otherwise
    $ migrabot deploy staging --dry-run
    $ migrabot resolve prod --rolled-back 20240301_bad_migration
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from bot.cli import (
    EXIT_NO,
    EXIT_OK,
    CliError,
    add_config_option,
    add_json_option,
    add_policy_options,
    emit,
    environment_from_args,
    run_async,
)
from bot.redact import redact

if TYPE_CHECKING:
    from actions.deploy import DeployResult
    from actions.events import DeployEvent
    from actions.status import MigrationStatus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="compare the migrations folder with the database (exit 1 unless up to date)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_status)

    p = sub.add_parser("deploy", help="the runbook's procedure: pre-flight, verified backup, status, apply, "
                                      "verification; the environment's policy (staging first, approvals, typed "
                                      "confirmation) as in Slack")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    p.add_argument("--dry-run", action="store_true", help="show what would be applied, change nothing")
    add_policy_options(p, no_backup=True)
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_deploy)

    p = sub.add_parser("resolve", help="settle a failed migration (like prisma migrate resolve)")
    p.add_argument("env", metavar="ENV", help="environment name or alias")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--applied", metavar="NAME", help="record NAME as applied (you completed it by hand)")
    group.add_argument("--rolled-back", metavar="NAME", help="mark NAME's failed run as rolled back (deploy reruns it)")
    add_policy_options(p, confirm=False)
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
    for r in status.running:
        lines.append(f"running now: {r.describe()}; run `migrabot status {env_name}` again when it ends")
    for f in status.failed:
        lines.append(f"FAILED: {f.name} (started {f.started_at})"
                     + (f": partly applied, {f.partly_applied}" if f.partly_applied else ""))
        if f.logs:
            lines.extend(f"    {line}" for line in f.logs.splitlines())
        else:
            lines.append("    no outcome was recorded: the process applying it stopped (killed, or its host lost)"
                         + (f"; {f.progress.describe()}" if f.progress else ""))
        if f.partly_applied or (f.progress is not None and f.progress.interrupted):
            lines.append(f"  next: {f.next_step(env_name)}")
        else:
            lines.append(f"  resolve with: migrabot resolve {env_name} --rolled-back {f.name}   (not in the "
                         "database; deploy reruns it)")
            lines.append(f"            or: migrabot resolve {env_name} --applied {f.name}       (you completed it "
                         "by hand)")
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
    # imported when the command runs, not when the parser is built (CLI start-up speed: asyncpg)
    from actions.status import migration_status

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
    if result.failed and result.failed.partly_applied:
        failed = result.failed
        progress = failed.progress.describe() if failed.progress else failed.partly_applied
        parts.append(f"FAILED at {failed.name}: partly applied, {progress}")
        parts.append(f"next: {result.failed.next_step(env_name)}")
    elif result.failed:
        parts.append(f"FAILED at {result.failed.name}; fix it, then `migrabot resolve {env_name} --rolled-back "
                     f"{result.failed.name}` (or --applied) before deploying again")
    if result.aborted:
        parts.append("stopped on request between migrations; nothing is half-done")
    return "\n".join(parts)


def run_deploy(args: argparse.Namespace) -> int:
    # imported when the command runs (CLI start-up speed): the engine, and the policy, its checks and
    # the procedure, which load the state and Slack code that other commands do not need
    from actions.deploy import DeployResult, deploy, refuse_unsafe_state
    from actions.procedure import StepFailed, run_migrate
    from actions.status import migration_status
    from bot.cli.policy_gate import open_gate
    from bot.cli.progress import PrintedSteps
    from bot.rules.checks import staging_gate
    from bot.rules.kinds import KINDS
    from bot.rules.policy import requirements

    config, env = environment_from_args(args)
    events: list[dict[str, Any]] = []
    as_json = getattr(args, "json", False)

    def on_event(event: DeployEvent) -> None:
        if as_json:
            events.append(event.to_dict())
        else:
            _print_event(event)

    if args.dry_run:
        result = run_async(deploy(
            env.migration_url, env.migrations_dir, lock_timeout=env.lock_timeout,
            statement_timeout=env.statement_timeout, retry=env.retry,
            advisory_lock_timeout=env.advisory_lock_timeout, on_event=on_event, dry_run=True,
            connect_timeout=env.connect_timeout, env_name=env.name))
        emit(args, {"environment": env.name, **result.to_dict(), "events": events},
             lambda: describe_deploy(env.name, result))
        return EXIT_OK if result.ok else EXIT_NO
    status = run_async(migration_status(env.migration_url, env.migrations_dir, timeout=env.connect_timeout))
    refuse_unsafe_state(status, env.name)
    if not status.pending:
        nothing = DeployResult()
        if status.running:  # another process is applying: wait for its lock, as `prisma migrate deploy` does
            nothing = run_async(deploy(
                env.migration_url, env.migrations_dir, lock_timeout=env.lock_timeout,
                statement_timeout=env.statement_timeout, retry=env.retry,
                advisory_lock_timeout=env.advisory_lock_timeout, on_event=on_event, expected=[],
                connect_timeout=env.connect_timeout, env_name=env.name))
        emit(args, {"environment": env.name, **nothing.to_dict(), "events": events},
             lambda: describe_deploy(env.name, nothing))
        return EXIT_OK
    local = status.local_by_name()
    plan = {"migrations": [{"name": n, "checksum": local[n].checksum} for n in status.pending]}
    need = requirements(env, KINDS["migrate"])
    staging_problem = None
    if need.earlier:
        check = run_async(staging_gate(config, env, plan))
        staging_problem = check["reason"] if check["status"] == "fail" else None
    gate = open_gate(args, config, env, need, what=f"apply {len(status.pending)} migration(s): "
                     + ", ".join(status.pending), staging_problem=staging_problem, plan_names=status.pending)
    for note in gate.notes:
        print(f"note: {note}", file=sys.stderr)
    steps = PrintedSteps(quiet=as_json)
    # an approved Slack run applies exactly what its approvers saw; otherwise, like `prisma migrate deploy`,
    # whatever is pending once the migration lock is held (a concurrent deploy may have applied some)
    approved = gate.run["plan"].get("migrations", []) if gate.run else None
    names = [m["name"] for m in approved] if approved is not None else None
    sums = {m["name"]: m["checksum"] for m in approved} if approved is not None else None
    try:
        outcome = run_async(run_migrate(env, names, sums, steps, requested_by=gate.actor,
                                        reason=f"before `migrabot deploy {env.name}` by {gate.actor}",
                                        backup=not args.no_backup, on_event=on_event))
    except StepFailed as exc:
        gate.finish(succeeded=False, summary=str(exc))
        if exc.deploy is None:  # not a migration that failed: the server, the backup, the status said no
            raise CliError(str(exc)) from None
        failed = exc.deploy
        text = describe_deploy(env.name, failed)
        emit(args, {"environment": env.name, **failed.to_dict(), "ok": False, "error": str(exc),
                    "backup_id": exc.result.get("backup_id"), "steps": steps.steps, "events": events}, text)
        return EXIT_NO
    done = outcome.deploy or DeployResult(pending=list(status.pending))
    gate.finish(succeeded=True, summary=f"{len(outcome.applied)} applied; backup {outcome.backup_id or 'none'}")
    emit(args, {"environment": env.name, **done.to_dict(), "backup_id": outcome.backup_id,
                "verification": outcome.verification, "steps": steps.steps, "events": events},
         lambda: describe_deploy(env.name, done) + f"\nbackup: {outcome.backup_id or 'none (--no-backup)'}"
                 f"\nverification: {outcome.verification}")
    return EXIT_OK


def run_resolve(args: argparse.Namespace) -> int:
    # imported when the command runs (CLI start-up speed): the engine, and the policy, which loads the
    # state code that other commands do not need
    from actions.resolve import resolve_applied, resolve_rolled_back
    from bot.cli.policy_gate import open_gate
    from bot.rules.kinds import KINDS
    from bot.rules.policy import requirements

    config, env = environment_from_args(args)

    name, action = (args.applied, "applied") if args.applied else (args.rolled_back, "rolled_back")
    as_ = "applied" if args.applied else "rolled-back"
    gate = open_gate(args, config, env, requirements(env, KINDS["resolve"]), what=f"mark {name} {as_}",
                     expect_plan={"migration": name, "as": as_})
    resolve = resolve_applied if args.applied else resolve_rolled_back
    try:
        message = run_async(resolve(env.migration_url, env.migrations_dir, name,
                                    advisory_lock_timeout=env.advisory_lock_timeout, timeout=env.connect_timeout))
    except Exception as exc:
        gate.finish(succeeded=False, summary=str(exc))
        raise
    gate.finish(succeeded=True, summary=message)
    emit(args, {"environment": env.name, "migration": name, "resolved_as": action, "message": message},
         f"{env.name}: {message}")
    return EXIT_OK
