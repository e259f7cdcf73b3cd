"""``migrabot console`` and ``migrabot demo``: the whole bot in a terminal, without a Slack workspace.

    migrabot console --config migrabot.toml --user alice     # type /migrate staging, click 3, /as bob ...
    migrabot console --script tour.txt                       # non-interactive: prints the transcript
    migrabot demo                                            # embedded PostgreSQL + demo config + console
    migrabot demo --script bot/demo/tour.txt                 # the README's first command, end to end
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from bot.cli import EXIT_ERROR, EXIT_OK, CliError, add_config_option, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="use the bot in this terminal: Slack simulated, real databases",
                       description="Type what you would type in Slack (/migrate staging); the bot's messages "
                                   "appear here with numbered buttons. Lines come from --script, or from "
                                   "standard input when it is not a terminal.")
    add_config_option(p)
    _common(p)
    p.add_argument("--state", metavar="FILE",
                   help="the bot's state SQLite file (default: a fresh temporary one per session)")
    p.set_defaults(func=run_console)

    d = sub.add_parser("demo", help="start a throwaway PostgreSQL with staging and prod and open the console",
                       description="Starts an embedded PostgreSQL with staging and prod databases, writes a demo "
                                   "configuration and opens the console with a guide. Everything is removed "
                                   "on exit unless --keep.")
    d.add_argument("--dir", metavar="DIR", help="where the server, config, backups and state go "
                                                "(a new or empty directory; default: a temporary one)")
    d.add_argument("--keep", action="store_true", help="keep the directory on exit (the server is stopped)")
    _common(d)
    d.set_defaults(func=run_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default="alice", metavar="NAME",
                   help="who you are at the start (alice, bob, carol or dave; /as NAME switches)")
    p.add_argument("--script", metavar="FILE", help="run the lines of FILE (blank lines and # comments skipped) "
                                                  "and print the transcript; exit 1 at a line that fails")
    p.add_argument("--keep-going", action="store_true", help="with a script: run every line even after a failure")


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the app and the server stop


def _lines(args: argparse.Namespace) -> tuple[list[tuple[int, str]] | None, str]:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from bot.console.repl import script_lines

    if args.script:
        path = _script_path(args.script)
        try:
            return script_lines(path.read_text(encoding="utf-8")), str(path)
        except OSError as exc:
            raise CliError(f"cannot read the script {path}: {exc.strerror}; check the path (a relative path is "
                           f"read from the current directory, {Path.cwd()})") from None
    if not sys.stdin.isatty():
        return script_lines(sys.stdin.read()), "standard input"
    return None, ""


def _script_path(name: str) -> Path:
    """``--script FILE`` from the current directory, made absolute at once.

    A relative path that is absent here but names a file shipped inside migrabot (the README's
    ``bot/demo/tour.txt``) is that file, so the documented command works outside a checkout too.
    """
    path = Path(name).expanduser().absolute()
    if not path.exists() and not Path(name).expanduser().is_absolute():
        shipped = Path(__file__).resolve().parents[2] / name  # the folder holding the bot package
        if shipped.is_file():
            return shipped
    return path


def _print(text: str) -> None:
    print(text, flush=True)


def session_loop(config: Any, args: argparse.Namespace, script: tuple[list[tuple[int, str]] | None, str], *,
                 people: Any = None, state: str | None = None, banner: str | None = None) -> int:
    """Start a session, run the script (or the prompt when ``script`` has no lines list), always clean up."""
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from bot.console.repl import LoopThread, run_interactive, run_script, use_color
    from bot.console.session import ConsoleError, ConsoleSession

    lines, source = script
    try:
        session = ConsoleSession(config, user=args.user, people=people, state_path=state,
                                 color=lines is None and use_color())
    except ConsoleError as exc:
        raise CliError(str(exc)) from None
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with LoopThread() as loop:
            try:
                loop.call(session.start())
                if lines is not None:
                    if banner:
                        _print(banner)
                    return run_script(loop, session, lines, _print, keep_going=args.keep_going, source=source)
                return run_interactive(loop, session, _print, banner)
            except KeyboardInterrupt:
                _print("\nmigrabot console: interrupted; stopping the bot")
                return 130
            finally:
                loop.call(session.close())
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_console(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    return session_loop(config, args, _lines(args), state=args.state)


def run_demo(args: argparse.Namespace) -> int:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from bot.config import load_config
    from bot.console.demo import DEMO_GROUPS, DEMO_USERS, guide, start_demo, stop_demo
    from bot.console.session import people_for

    if getattr(args, "config", None):  # --config is global: say why it does not apply here
        raise CliError("migrabot demo writes its own configuration for its embedded PostgreSQL, so --config does "
                       "not apply; to try the bot on your own databases run `migrabot console --config FILE`")
    script = _lines(args)
    if script[0] is not None and not script[0]:
        _print(f"migrabot demo: nothing to run in {script[1]}; run it in a terminal, or give --script FILE")
        return EXIT_OK
    previous = signal.signal(signal.SIGTERM, _terminate)
    demo = None
    try:
        _print("migrabot demo: starting PostgreSQL …")
        demo = start_demo(Path(args.dir) if args.dir else None, keep=args.keep)
        config = load_config(demo.config_path, environ={})
        people = people_for(config, DEMO_USERS, DEMO_GROUPS)
        return session_loop(config, args, script, people=people, state=str(config.state_path), banner=guide(demo))
    except KeyboardInterrupt:
        _print("\nmigrabot demo: interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if demo is not None:
            stop_demo(demo)
            _print(f"migrabot demo: PostgreSQL stopped; {demo.dir} " + ("kept" if demo.keep else "removed"))


__all__ = ["EXIT_ERROR", "EXIT_OK", "register"]
