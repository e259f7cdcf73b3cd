"""One policy for every interface: what a run of each kind needs on an environment, from Slack or the CLI.

    >>> from pathlib import Path
    >>> from bot.config import Environment
    >>> from bot.rules.kinds import KINDS
    >>> prod = Environment(name="prod", database_url="postgresql://u@h/p", migrations_dir=Path("m"),
    ...                    backup_dir=Path("b"), requires=("staging",), required_approvals=2,
    ...                    confirm_by_typing=True)
    >>> need = requirements(prod, KINDS["migrate"])
    >>> need.earlier, need.approvals, need.typed_word, need.backup
    (('staging',), 2, 'prod', True)
    >>> cli_refusals(need, approved_run=False, break_glass=None, no_backup=True)[0][:44]
    'prod requires 2 approvals: request the run i'

Slack enforces these through the run message (the checklist's staging item, the approvals, the
typed-confirmation modal, the backup step); the CLI through :func:`cli_refusals` before it runs
the same procedure (``actions/procedure.py``). ``--break-glass`` is the one way around approvals
and the staging gate, and it is audited with the reason and the OS user.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Environment
from bot.rules.confirmation import confirm_word
from bot.rules.kinds import Kind

#: The CLI command that runs each kind, for the messages.
CLI_COMMAND = {"migrate": "deploy", "rollback": "restore", "resolve": "resolve", "undo": "undo"}
SLACK_COMMAND = {"migrate": "/migrate", "rollback": "/rollback", "resolve": "/migrate resolve", "undo": "/rollback"}


@dataclass(frozen=True)
class Requirements:
    """What a run of ``kind`` on ``env`` needs before it may change anything."""

    kind: str
    env: str
    earlier: tuple[str, ...]  # environments that must have applied the same migrations first
    approvals: int  # approvals from the environment's approvers
    typed_word: str | None  # what must be typed to confirm (the environment's name, RESTORE), if anything
    backup: bool  # a verified backup before the schema changes
    backup_optional: bool  # the environment lets an operator skip it (CLI --no-backup)


def requirements(env: Environment, kind: Kind) -> Requirements:
    changes_schema = kind.name in ("migrate", "undo")
    return Requirements(
        kind=kind.name, env=env.name,
        earlier=tuple(env.requires) if kind.name == "migrate" else (),
        approvals=kind.needed_approvals(env),
        typed_word=confirm_word(kind, env),
        backup=changes_schema,
        backup_optional=changes_schema and env.allow_no_backup,
    )


def cli_refusals(need: Requirements, *, approved_run: bool, break_glass: str | None, no_backup: bool = False,
                 staging_problem: str | None = None) -> list[str]:
    """Why the CLI may not run this now, one sentence each (empty: it may, after the typed confirmation).

    ``approved_run``: the command named a Slack run (``--run ID``) whose approvals are met.
    ``staging_problem``: what the staging gate found (None when it passed or does not apply).
    """
    refusals = []
    cli = f"migrabot {CLI_COMMAND.get(need.kind, need.kind)} {need.env}"
    if need.approvals and not approved_run and not break_glass:
        refusals.append(f"{need.env} requires {need.approvals} approval{'s' if need.approvals != 1 else ''}: "
                        f"request the run in Slack (`{SLACK_COMMAND.get(need.kind, '/migrate')} {need.env}`), then "
                        f"`{cli} --run ID` once it is approved, or use --break-glass \"REASON\" "
                        "(audited and announced)")
    if staging_problem and not break_glass:
        refusals.append(f"{need.env} requires {', '.join(need.earlier)} first: {staging_problem}")
    if no_backup and not need.backup_optional:
        refusals.append(f"{need.env} does not allow runs without a verified backup (set allow_no_backup = true "
                        "for it in the configuration if that is really wanted)")
    return refusals
