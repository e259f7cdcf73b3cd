"""``migrabot lint ENV|DIR [--json]``: is what would be deployed zero-downtime safe?

    $ migrabot lint prod            # the pending migrations of environment "prod"
    $ migrabot lint prisma/migrations   # every migration in a folder

Exit 0 when zero-downtime safe, 1 when a migration is risky or could not be parsed, 2 on errors.
"""

from __future__ import annotations

import argparse
import os

from actions.squawk import DEFAULT_EXCLUDE, SquawkRun, migration_files, start_squawk
from bot.cli import (
    CONFIG_FILE,
    EXIT_NO,
    EXIT_OK,
    CliError,
    add_config_option,
    add_json_option,
    emit,
    environment_from_args,
    optional_config,
    run_async,
)

# typing.TYPE_CHECKING without importing typing (see bot.cli); mypy takes the name as True
TYPE_CHECKING = False
if TYPE_CHECKING:
    from actions.lint import LintReport


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="classify migrations as zero-downtime safe or risky (runbook + squawk)",
                       description="Lint the pending migrations of an environment, or every migration of a "
                                   "folder, against the runbook's zero-downtime rules.")
    p.add_argument("target", metavar="ENV|DIR", help="an environment name (its pending migrations) or a "
                                                      "Prisma migrations folder")
    p.add_argument("--all", action="store_true", help="with an environment: lint every migration, not only "
                                                      "the pending ones")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run, start=start)


def _exclude(args: argparse.Namespace) -> tuple[str, ...]:
    """The configuration's ``[lint] exclude``, else the default (linting a folder needs no configuration).

    Read only when there is a file to read (bot.config's own rule: ``--config``, ``$MIGRABOT_CONFIG``,
    ``./migrabot.toml``): loading the configuration module takes longer than squawk on a hundred files,
    and without a file there is no ``[lint]`` section."""
    if not (getattr(args, "config", None) or os.environ.get("MIGRABOT_CONFIG") or os.path.isfile(CONFIG_FILE)):
        return DEFAULT_EXCLUDE
    config = optional_config(args)
    return (config.lint_exclude if config is not None else ()) or DEFAULT_EXCLUDE


def start(args: argparse.Namespace) -> None:
    """squawk started on a folder's migrations before anything else is loaded or read (``main`` calls this
    before it sets up logging): from here on, everything migrabot does overlaps squawk's run."""
    if os.path.isdir(args.target):
        names = migration_files(args.target)
        args.squawk = (names, start_squawk(args.target, names))


def run(args: argparse.Namespace) -> int:
    early: tuple[list[str], SquawkRun] | None = getattr(args, "squawk", None)
    try:
        # imported here, not at the top: the linter (the splitter, its dataclasses) loads while squawk runs
        from actions.lint import LintReport, lint_folder
    except BaseException:
        if early is not None:
            early[1].cancel()
        raise
    heading: str
    if os.path.isdir(args.target):
        folder = args.target
        # the configuration is read while squawk runs (with the default exclusions); lint_folder runs
        # squawk again only if the configuration wants a rule the default skips
        names, squawk = early if early is not None else (migration_files(folder), None)
        try:
            exclude = _exclude(args)
        except BaseException:
            if squawk is not None:
                squawk.cancel()
            raise
        report = lint_folder(folder, names, exclude=exclude, squawk=squawk)
        heading = f"{len(report.migrations)} migration(s) in {folder}"
    else:
        config, env = environment_from_args(args, args.target)
        exclude = config.lint_exclude or DEFAULT_EXCLUDE
        names = None
        if not args.all:
            # imported here, not at the top: `migrabot --version` and the other commands start fast
            from actions.status import migration_status

            status = run_async(migration_status(env.migration_url, env.migrations_dir,
                                                timeout=env.connect_timeout))
            names = list(status.pending)
        if names == []:
            report = LintReport([])
            heading = f"{env.name}: no pending migrations"
        else:
            if not env.migrations_dir.is_dir():
                raise CliError(f"{env.migrations_dir} does not exist: set migrations_dir for {env.name}")
            report = lint_folder(env.migrations_dir, names, exclude=exclude)
            which = "migration(s)" if args.all else "pending migration(s)"
            heading = f"{env.name}: {len(report.migrations)} {which}"
    emit(args, report.to_dict(), lambda: render(report, heading))
    return EXIT_OK if report.zero_downtime_safe else EXIT_NO


MARKS = {"safe": "ok  ", "risky": "RISK"}


def render(report: LintReport, heading: str) -> str:
    """Human text: one block per migration, findings with their advice."""
    lines = [heading]
    for m in report.migrations:
        verdict = m.verdict
        if verdict == "unparsed":
            lines.append(f"??   {m.name}: could not be parsed, so it is not known to be safe: check its SQL")
        else:
            lines.append(f"{MARKS.get(verdict, '??  ')} {m.name}: {verdict}")
        advised: set[str] = set()
        for f in m.findings:
            kind = "risky" if f.risky else "note"
            lines.append(f"       line {f.line} [{kind}: {f.category}] {f.statement or f.message}")
            if f.category not in advised:  # the advice once per kind of problem, not per line
                advised.add(f.category)
                lines.append(f"         {f.message}")
                lines.append(f"         -> {f.advice}")
    if report.zero_downtime_safe:
        verdict = "yes"
    elif report.risky:
        verdict = f"no ({len(report.risky)} risky migration(s))"
    else:
        verdict = f"unknown ({len(report.unparsed)} migration(s) could not be parsed)"
    lines.append(f"zero-downtime safe: {verdict}")
    return "\n".join(lines)
