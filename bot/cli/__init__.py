"""The operator CLI: ``migrabot <command>``.

Each command lives in its own module here and registers itself through
``register(subparsers)``. User errors print one sentence to stderr and exit 2;
a command whose answer is "no" (problems found, not up to date) exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys

from actions.errors import ActionError
from bot import __version__
from bot.redact import redact, redact_obj
from state.errors import StateVersionError

# typing.TYPE_CHECKING without importing typing: every command pays for what this module imports
# before it starts (`migrabot lint DIR` starts squawk right after); mypy takes the name as True
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, TypeVar

    from bot.config import Config, Environment

    T = TypeVar("T")

# One module per group of commands; each defines register(subparsers).
COMMAND_MODULES = (
    "bot.cli.config_cmd",
    "bot.cli.engine_cmd",
    "bot.cli.lint_cmd",
    "bot.cli.backup_cmd",
    "bot.cli.monitor_cmd",
    "bot.cli.serve_cmd",
    "bot.cli.console_cmd",
    "bot.cli.drift_cmd",
    "bot.cli.rehearse_cmd",
)

#: The module of each command: the parser is built with the module of the command being run only
#: (`migrabot lint DIR` runs on every push in CI; `serve`'s module alone loads asyncio), and with none
#: for `migrabot --version`. A test checks this table against what the modules register.
COMMANDS = {
    "backup": "bot.cli.backup_cmd", "backups": "bot.cli.backup_cmd", "restore": "bot.cli.backup_cmd",
    "check-config": "bot.cli.config_cmd",
    "console": "bot.cli.console_cmd", "demo": "bot.cli.console_cmd",
    "drift": "bot.cli.drift_cmd",
    "status": "bot.cli.engine_cmd", "deploy": "bot.cli.engine_cmd", "resolve": "bot.cli.engine_cmd",
    "lint": "bot.cli.lint_cmd",
    "report": "bot.cli.monitor_cmd", "health": "bot.cli.monitor_cmd", "blockers": "bot.cli.monitor_cmd",
    "rehearse": "bot.cli.rehearse_cmd",
    "serve": "bot.cli.serve_cmd",
}

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """A user error: printed as one sentence on stderr, exit code 2."""


# The global options, accepted before the subcommand and after it (``migrabot --config F status
# prod`` and ``migrabot status prod --config F`` alike). The top-level parser holds their defaults;
# each subcommand's copy defaults to SUPPRESS, so that it sets nothing unless given there and a
# value given before the subcommand survives.
CONFIG_FILE = "migrabot.toml"  # bot.config.DEFAULT_CONFIG_PATH, without loading bot.config (tests check)
CONFIG_HELP = f"configuration file (default: $MIGRABOT_CONFIG or ./{CONFIG_FILE})"
JSON_HELP = "print the result as JSON"
VERBOSE_HELP = "log what happens to stderr"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` on a subcommand (every subcommand gets it; calling this is harmless)."""
    if "--config" not in parser._option_string_actions:
        parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json`` on a subcommand (every subcommand gets it; calling this is harmless)."""
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def add_policy_options(parser: argparse.ArgumentParser, *, confirm: bool = True, no_backup: bool = False) -> None:
    parser.add_argument("--run", type=int, metavar="ID",
                        help="the approved Slack run to carry out (where the environment requires approvals)")
    parser.add_argument("--break-glass", metavar="REASON",
                        help="run without the approvals and the staging gate: audited with REASON and your OS "
                             "user, and announced in the environment's channel")
    if confirm:
        parser.add_argument("--confirm", default=None, metavar="WORD",
                            help="the typed confirmation, for scripts (the environment's name, or RESTORE)")
    if no_backup:
        parser.add_argument("--no-backup", action="store_true",
                            help="skip the verified backup (only where the environment sets allow_no_backup)")


def _config(args: argparse.Namespace, *, required: bool) -> Config | None:
    # imported here, not at the top (CLI start-up): `migrabot lint DIR` starts squawk before reading it
    from bot.config import ConfigError, load_config

    try:
        return load_config(getattr(args, "config", None))
    except ConfigError:
        if required:
            raise
        return None


def config_from_args(args: argparse.Namespace) -> Config:
    config = _config(args, required=True)
    assert config is not None
    return config


def optional_config(args: argparse.Namespace) -> Config | None:
    """The configuration, or None when there is none or it has problems (for commands that work without one)."""
    return _config(args, required=False)


def environment_from_args(args: argparse.Namespace, name: str | None = None) -> tuple[Config, Environment]:
    """The configuration and the environment named on the command line (by name or alias)."""
    config = config_from_args(args)
    wanted = name if name is not None else args.env
    env = config.environment(wanted)
    if env is None:
        known = ", ".join(config.environment_names())
        raise CliError(f'unknown environment "{wanted}"; known environments: {known}')
    return config, env


def emit(args: argparse.Namespace, data: Any, text: str | Callable[[], str]) -> None:
    """Print ``data`` as JSON with --json, else the human text; both redacted."""
    if getattr(args, "json", False):
        print(json.dumps(redact_obj(data), indent=2, default=str))
    else:
        print(redact(text() if callable(text) else text))


class Terminated(Exception):
    """SIGTERM arrived while a command ran: it was cancelled, and its cleanup ran on the way out."""


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end; SIGTERM cancels it (raising :class:`Terminated`) rather than killing us.

    Cancelling lets every ``finally`` run: an unfinished backup folder is removed and pg_dump is
    stopped, a migration's connection is closed (so its transaction rolls back), locks are released.
    """
    # imported here, not at the top (CLI start-up): asyncio is slow to import, and `--version` or
    # `lint DIR` never need it
    import asyncio

    terminated = False

    async def guarded() -> T:
        nonlocal terminated
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals
            installed = False
        try:
            return await coro
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The whole parser; ``modules``: only those commands' (see :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(
        prog="migrabot",
        description="Run PostgreSQL (Prisma) schema migrations the way the runbook says.",
    )
    parser.add_argument("--version", action="version", version=f"migrabot {__version__}")
    parser.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        add_config_option(command)
        add_json_option(command)
        add_verbose_option(command)
    return parser


def _setup_logging(verbose: bool) -> None:
    """Warnings (or everything, with -v or $MIGRABOT_LOG) to stderr, redacted.

    Done after a command's :func:`start` hook: loading logging is not free, and squawk should not wait
    for it."""
    # imported here, not at the top: see the docstring
    from bot.log_redaction import log_to_stderr

    log_to_stderr("DEBUG" if verbose else "INFO" if os.environ.get("MIGRABOT_LOG") else "WARNING")


def _format_exception(exc: BaseException) -> str:
    # imported here, not at the top: only -v after a failure prints a traceback
    import traceback

    return redact("".join(traceback.format_exception(exc)))


def _server_errors() -> tuple[type[BaseException], ...]:
    """A broken connection, and asyncpg's errors when a command imported asyncpg (else none was raised).

    Looked up, not imported: `migrabot --version` and the commands without a database start faster.
    """
    asyncpg = sys.modules.get("asyncpg")
    found: tuple[type[BaseException], ...] = (ConnectionError,)
    return found + ((asyncpg.PostgresError, asyncpg.InterfaceError) if asyncpg is not None else ())


def server_failure(command: str, exc: BaseException) -> str:
    """One sentence for a connection lost (or a server error) in a command that has none of its own.

    >>> server_failure("report", ConnectionResetError("reset by peer"))
    'lost the database connection during `migrabot report` (reset by peer); it stopped there: check the \
server (`migrabot health ENV`) and what the command was doing (`migrabot status ENV`, `migrabot backups ENV`) \
before running it again'
    """
    reason = " ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
    lost = (isinstance(exc, ConnectionError) or type(exc).__name__ == "InterfaceError"
            or (getattr(exc, "sqlstate", None) or "").startswith(("08", "57P")))
    what = "lost the database connection" if lost else "the database server reported an error"
    return (f"{what} during `migrabot {command}` ({reason}); it stopped there: check the server (`migrabot health "
            "ENV`) and what the command was doing (`migrabot status ENV`, `migrabot backups ENV`) before running "
            "it again")


def command_word(argv: list[str]) -> str | None:
    """The command named in ``argv`` after the global options, if that is plain to see.

    >>> command_word(["--config", "m.toml", "-v", "lint", "prisma/migrations"]), command_word(["--help", "lint"])
    ('lint', None)
    """
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--config":
            i += 2
        elif word.startswith("--config=") or word in ("--json", "-v", "--verbose"):
            i += 1
        else:
            return None if word.startswith("-") else word
    return None


def parser_modules(argv: list[str]) -> tuple[str, ...]:
    """The command modules the parser needs for ``argv``: the named command's, none for ``--version``
    alone, all of them otherwise (``--help``, or a word that is no command: the error lists them all).

    >>> parser_modules(["lint", "dir"]), parser_modules(["--version"]), len(parser_modules(["-h"]))
    (('bot.cli.lint_cmd',), (), 9)
    """
    word = command_word(argv)
    if word in COMMANDS:
        return (COMMANDS[word],)
    if word is None and argv and all(a == "--version" for a in argv):
        return ()
    return COMMAND_MODULES


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a person can act on, printed as one sentence; the configuration's only once it was loaded
    (looked up, not imported: a command that never read the configuration cannot have raised it)."""
    config = sys.modules.get("bot.config")
    return (CliError, ActionError, StateVersionError) + ((config.ConfigError,) if config is not None else ())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(parser_modules(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        start = getattr(args, "start", None)
        if start is not None:  # a command's slowest outside work (lint: squawk), started before logging loads
            start(args)
        _setup_logging(args.verbose)
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(redact(f"migrabot: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("migrabot: interrupted", file=sys.stderr)
        return 130
    except _server_errors() as exc:  # from a command without its own sentence for them
        if args.verbose:
            print(_format_exception(exc), file=sys.stderr)
        print(redact(f"migrabot: {server_failure(args.command, exc)}"), file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print("migrabot: stopped by SIGTERM before it finished (what it had started was cleaned up on the way "
              "out: an unfinished backup is removed, an unfinished migration's transaction is rolled back)",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as exc:  # a bug: never leak a secret through the traceback
        if args.verbose:
            print(_format_exception(exc), file=sys.stderr)
        print(redact(f"migrabot: internal error ({type(exc).__name__}: {exc}); "
                     "run again with -v and report it"), file=sys.stderr)
        return EXIT_ERROR
