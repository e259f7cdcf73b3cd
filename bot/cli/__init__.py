"""The operator CLI: ``migrabot <command>``.

Each command lives in its own module here and registers itself through
``register(subparsers)``. User errors print one sentence to stderr and exit 2;
a command whose answer is "no" (problems found, not up to date) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from actions.errors import ActionError
from bot import __version__
from bot.config import Config, ConfigError, Environment, load_config
from bot.redact import install_log_redaction, redact, redact_obj
from state.errors import StateVersionError

# One module per group of commands; each defines register(subparsers).
COMMAND_MODULES = (
    "bot.cli.config_cmd",
    "bot.cli.engine_cmd",
    "bot.cli.lint_cmd",
    "bot.cli.backup_cmd",
    "bot.cli.monitor_cmd",
    "bot.cli.serve_cmd",
    "bot.cli.console_cmd",
)

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """A user error: printed as one sentence on stderr, exit code 2."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default: $MIGRABOT_CONFIG or ./migrabot.toml)")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


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


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migrabot",
        description="Run PostgreSQL (Prisma) schema migrations the way the runbook says.",
    )
    parser.add_argument("--version", action="version", version=f"migrabot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else (
        logging.INFO if os.environ.get("MIGRABOT_LOG") else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(redact(f"migrabot: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    except (CliError, ActionError, StateVersionError) as exc:
        print(redact(f"migrabot: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("migrabot: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: never leak a secret through the traceback
        if args.verbose:
            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        print(redact(f"migrabot: internal error ({type(exc).__name__}: {exc}); "
                     "run again with -v and report it"), file=sys.stderr)
        return EXIT_ERROR
