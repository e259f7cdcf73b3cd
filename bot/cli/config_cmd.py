"""``migrabot check-config``: the resolved configuration, redacted, and every problem."""

from __future__ import annotations

import argparse
import sys

from bot.cli import EXIT_NO, EXIT_OK, add_config_option, add_json_option, emit
from bot.config import check_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the configuration and print it, secrets redacted")
    add_config_option(p)
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, problems, warnings = check_config(args.config)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if config is None:
        emit(args, {"ok": False, "problems": [str(p) for p in problems]},
             lambda: f"{len(problems)} problem(s) in the configuration:\n"
             + "\n".join(f"  - {p}" for p in problems))
        return EXIT_NO
    data = config.to_dict()
    emit(args, {"ok": True, "config": data, "warnings": [str(w) for w in warnings]},
         lambda: _describe(data))
    return EXIT_OK


def _describe(data: dict) -> str:
    lines = [f"configuration from {data['source']}: OK",
             f"state: {data['state_path']}", f"timezone: {data['timezone']}"]
    for name, env in data["environments"].items():
        aliases = f" (aliases: {', '.join(env['aliases'])})" if env["aliases"] else ""
        lines.append(f"\n[{name}]{aliases}")
        for key, value in env.items():
            if key in ("name", "aliases"):
                continue
            lines.append(f"  {key} = {value}")
    return "\n".join(lines)
