"""``migrabot check-config``: the resolved configuration, redacted, and every problem.

    $ migrabot check-config --config migrabot.toml          # exit 0: prints the configuration
    $ migrabot check-config --config broken.toml --json     # exit 1: {"ok": false, "problems": [...]}

Problems (and warnings) go to stderr, one per line with its key path; the configuration
itself goes to stdout. Every password and token is replaced by ``***``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bot.cli import EXIT_NO, EXIT_OK, add_config_option, add_json_option, emit
from bot.config import Problem, check_config
from bot.redact import redact

SLACK_ENV_VARS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the configuration and print it, secrets redacted",
                       description="Validate the configuration, report every problem with its key path "
                       "(exit 1), or print the resolved configuration with secrets redacted (exit 0).")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, problems, warnings = check_config(args.config)
    for w in warnings:
        print(redact(f"warning: {w}"), file=sys.stderr)
    if config is None:
        if args.json:
            emit(args, {"ok": False, "problems": [str(p) for p in problems]}, "")
        else:
            print(redact(_describe_problems(problems)), file=sys.stderr)
        return EXIT_NO
    data = config.to_dict()
    # whether the Slack secrets are set, never their values
    slack = {name: bool(os.environ.get(name)) for name in SLACK_ENV_VARS}
    emit(args, {"ok": True, "config": data, "slack_env": slack, "warnings": [str(w) for w in warnings]},
         lambda: _describe(data, slack))
    return EXIT_OK


def _describe_problems(problems: list[Problem]) -> str:
    if len(problems) == 1 and not problems[0].path:
        return f"migrabot: {problems[0]}"  # a file-level problem (absent, unreadable, not TOML) is one sentence
    return (f"migrabot: the configuration has {len(problems)} problem(s):\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nFix them, then run `migrabot check-config` again.")


def _value(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    return str(value)


def _describe(data: dict[str, Any], slack: dict[str, bool]) -> str:
    lines = [f"configuration from {data['source']}: OK",
             f"state: {data['state_path']}", f"timezone: {data['timezone']}",
             "slack: " + ", ".join(f"{k} {'set' if v else 'NOT SET'}" for k, v in slack.items())]
    for name, env in data["environments"].items():
        aliases = f" (aliases: {', '.join(env['aliases'])})" if env["aliases"] else ""
        lines.append(f"\n[{name}]{aliases}")
        for key, value in env.items():
            if key in ("name", "aliases"):
                continue
            lines.append(f"  {key} = {_value(value)}")
    return "\n".join(lines)
