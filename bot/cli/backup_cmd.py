"""``migrabot backup``, ``migrabot backups`` and ``migrabot restore``.

    migrabot backup prod --reason "before the 2.3 release"
    migrabot backups prod --prune
    migrabot restore prod 20240101_120000 --confirm RESTORE
    migrabot restore prod --drop-previous
    migrabot restore prod --clean-up        # after a restore was killed: drop its half-restored copy
"""

from __future__ import annotations

import argparse
import getpass
import sys

from actions import humanize
from bot.cli import (
    EXIT_OK,
    CliError,
    add_config_option,
    add_json_option,
    add_policy_options,
    emit,
    environment_from_args,
    run_async,
)

ALL = "*"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="take a verified backup of an environment's database now")
    p.add_argument("env", help="environment name or alias")
    p.add_argument("--reason", default="manual backup", help="why (kept in the manifest)")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_backup)

    p = sub.add_parser("backups", help="list an environment's backups, newest first")
    p.add_argument("env", help="environment name or alias")
    p.add_argument("--prune", action="store_true", help="first remove the backups the retention settings let go")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_backups)

    p = sub.add_parser("restore", help="restore a backup (restore into a copy, then swap)")
    p.add_argument("env", help="environment name or alias")
    p.add_argument("backup_id", nargs="?", help="the backup's id (see `migrabot backups ENV`), or 'latest'")
    p.add_argument("--confirm", default=None, metavar="WORD",
                   help="the runbook's confirmation word, for scripts (on a terminal it is asked)")
    p.add_argument("--from-other-env", action="store_true",
                   help="restore a backup whose manifest names another environment, database or server")
    p.add_argument("--in-place", action="store_true",
                   help="empty the database and restore into it (the runbook's way; for roles without CREATEDB)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="skip the safety backup of the current data (data written since the backup is then lost)")
    p.add_argument("--drop-previous", nargs="?", const=ALL, metavar="NAME",
                   help="drop the databases earlier restores kept (or only NAME) instead of restoring")
    p.add_argument("--clean-up", action="store_true",
                   help="after a restore was killed: drop the copy it was filling and let connections into the "
                        "database again (refused while a restore runs); lists the databases restores kept")
    add_policy_options(p, confirm=False)
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run_restore)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a bare container
        return "cli"


def run_backup(args: argparse.Namespace) -> int:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from actions.backup import BackupProgress, take_backup

    _, env = environment_from_args(args)

    def progress(p: BackupProgress) -> None:
        if not args.json:
            state = "done" if p.done else "dumping"
            print(f"{state}: {humanize.size(p.bytes_written)} in {p.elapsed:.0f}s", file=sys.stderr)

    info = run_async(take_backup(
        env.migration_url, env.backup_dir, env.name, reason=args.reason, requested_by=_who(),
        jobs=env.backup_jobs, free_margin=env.backup_free_margin, on_progress=progress))
    emit(args, info.to_dict(), lambda: (
        f"backup {info.id} of {env.name}: {humanize.size(info.size_bytes)}, verified, last migration "
        f"{info.last_migration or 'none'}\n{info.path}"))
    return EXIT_OK


def run_backups(args: argparse.Namespace) -> int:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from actions.backup import list_backups
    from actions.retention import prune

    _, env = environment_from_args(args)
    pruned = prune(env.backup_dir, env.name, env.retention) if args.prune else []
    backups = list_backups(env.backup_dir, env.name)

    def text() -> str:
        lines = [f"pruned: {', '.join(pruned)}"] if pruned else []
        if not backups:
            lines.append(f"no backups of {env.name} in {env.backup_dir / env.name}")
            return "\n".join(lines)
        rows = [("ID", "AGE", "SIZE", "LAST MIGRATION", "VERIFIED", "KIND")]
        rows += [(b.id, humanize.age(b.age().total_seconds()), humanize.size(b.size_bytes), b.last_migration or "-",
                  "yes" if b.verified else f"no ({b.status})", b.kind) for b in backups]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join(lines)

    emit(args, {"env": env.name, "pruned": pruned, "backups": [b.to_dict() for b in backups]}, text)
    return EXIT_OK


def run_restore(args: argparse.Namespace) -> int:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from actions.backup import get_backup, origin_problem
    from actions.db import database_name
    from actions.restore import CONFIRM_WORD, RestoreStep, clean_up, drop_previous, restore, sessions_on
    from bot.cli.policy_gate import open_gate
    from bot.rules.kinds import KINDS
    from bot.rules.policy import requirements

    config, env = environment_from_args(args)
    if args.clean_up:
        if args.backup_id or args.drop_previous is not None:
            raise CliError("--clean-up runs alone: give no BACKUP_ID and no --drop-previous with it")
        done = run_async(clean_up(env.migration_url, env.name))
        emit(args, {"done": done}, lambda: "\n".join(done) if done else
             f"nothing left by an interrupted restore of {database_name(env.migration_url)}")
        return EXIT_OK
    if args.drop_previous is not None:
        if args.backup_id:
            raise CliError("give either a BACKUP_ID to restore or --drop-previous, not both")
        dropped = run_async(drop_previous(env.migration_url, None if args.drop_previous == ALL else
                                          args.drop_previous))
        emit(args, {"dropped": dropped},
             lambda: "dropped: " + ", ".join(dropped) if dropped else "no kept previous databases to drop")
        return EXIT_OK
    if not args.backup_id:
        raise CliError(f"name the backup to restore (see `migrabot backups {env.name}`), e.g. "
                       f"`migrabot restore {env.name} BACKUP_ID --confirm RESTORE`")

    def step(s: RestoreStep) -> None:
        if not args.json and s.status != "started":
            detail = f": {s.detail}" if s.detail else ""
            print(f"{s.name} {s.status} ({s.duration:.1f}s){detail}", file=sys.stderr)

    info = get_backup(env.backup_dir, env.name, args.backup_id)
    if args.backup_id == "latest":
        print(f"latest verified backup of {env.name}: {info.id} (taken {info.created_at:%Y-%m-%d %H:%M} UTC)",
              file=sys.stderr)
    origin = origin_problem(info, env.name, env.migration_url)
    if origin and not args.from_other_env:
        raise CliError(f"{origin}; nothing was changed. Pass --from-other-env to put that data into "
                       f"{env.name} ({database_name(env.migration_url)}) anyway")
    sessions = run_async(sessions_on(env.migration_url, timeout=env.connect_timeout))
    what = (f"replace {database_name(env.migration_url)} with backup {info.id}"
            + (f" FROM ANOTHER PLACE ({origin})" if origin else "")
            + f"; the swap ends {sessions.describe()} on it")
    gate = open_gate(args, config, env, requirements(env, KINDS["rollback"]), what=what)
    try:
        result = run_async(restore(
            env.migration_url, env.backup_dir, env.name, info.id, confirm=CONFIRM_WORD,
            mode="in-place" if args.in_place else "swap", snapshot=not args.no_snapshot,
            pgbouncer_admin_url=env.pgbouncer_admin_url, requested_by=gate.actor, jobs=env.backup_jobs,
            on_step=step, pgbouncer_database=database_name(env.database_url), allow_other_origin=bool(origin)))
    except Exception as exc:
        gate.finish(succeeded=False, summary=str(exc))
        raise
    gate.finish(succeeded=True, summary=f"restored {result.backup_id}")
    emit(args, result.to_dict(), lambda: (
        f"restored backup {result.backup_id} into {result.database} in {result.duration:.1f}s"
        + (f"; safety snapshot {result.snapshot_id}" if result.snapshot_id else "")
        + (f"; previous database kept as {result.previous_database} "
           f"(drop it with `migrabot restore {env.name} --drop-previous`)" if result.previous_database else "")))
    return EXIT_OK
