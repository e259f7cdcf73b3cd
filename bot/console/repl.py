"""Running a console session: interactively (prompt, readline history) or from a script (a transcript).

The bot's event loop runs in its own thread, so it keeps serving (scheduled work, the stand-in) while
the main thread waits at the prompt, and Ctrl-C in the main thread always reaches us::

    with LoopThread() as loop:
        session = ConsoleSession(config)
        loop.call(session.start())
        code = run_script(loop, session, ["/migrate staging", "tick all"], print)
        loop.call(session.close())
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from bot.console.commands import HELP, is_quit
from bot.console.session import ConsoleSession, LineResult

T = TypeVar("T")
HISTORY_FILE = "~/.migrabot_console_history"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LoopThread:
    """An asyncio loop in a daemon thread; :meth:`call` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="migrabot-console-loop", daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


def script_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) to run: blank lines and ``#`` comments are skipped.

    >>> script_lines("# tour\\n\\n/migrate staging\\n  tick all  \\n")
    [(3, '/migrate staging'), (4, 'tick all')]
    """
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def prompt(session: ConsoleSession) -> str:
    return f"{session.names.user(session.user)}> "


def run_script(loop: LoopThread, session: ConsoleSession, lines: Iterable[tuple[int, str]],
               out: Callable[[str], None], *, keep_going: bool = False, source: str = "script") -> int:
    """Run ``lines`` in order, echoing each after the prompt; 0 when every line was acted on, else 1.

    Stops at the first line that could not be acted on unless ``keep_going``.
    """
    failed: list[int] = []
    for number, line in lines:
        out(prompt(session) + line)
        if is_quit(line):
            break
        result: LineResult = loop.call(session.run_line(line))
        if result.output:
            out(result.output)
        if not result.ok:
            failed.append(number)
            if not keep_going:
                out(f"migrabot console: stopped at {source} line {number}: it could not be acted on")
                return 1
    if failed:
        out(f"migrabot console: {len(failed)} line(s) could not be acted on: "
            + ", ".join(f"line {n}" for n in failed))
        return 1
    return 0


def _setup_readline() -> Any:
    try:
        # imported here: readline is not on every platform; the console works without it
        import readline
    except ImportError:  # not on every platform; the console works without it
        return None
    path = Path(os.path.expanduser(HISTORY_FILE))
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline, path


def _save_history(handle: Any) -> None:
    if handle:
        readline, path = handle
        try:
            readline.write_history_file(path)
        except OSError:
            pass


def run_interactive(loop: LoopThread, session: ConsoleSession, out: Callable[[str], None],
                    banner: str | None = None) -> int:
    """The prompt loop; returns 0 on quit/EOF. Ctrl-C propagates (the caller cleans up)."""
    history = _setup_readline()
    out(banner or 'migrabot console: the bot runs here and Slack is simulated; type "help" for what you can type.')
    try:
        while True:
            idle = loop.call(_idle_changes(session))
            if idle:
                out(idle)
            try:
                line = input(prompt(session))
            except EOFError:
                out("")
                return 0
            if is_quit(line):
                return 0
            if not line.strip():
                continue
            result = loop.call(session.run_line(line))
            if result.output:
                out(result.output)
    finally:
        _save_history(history)


async def _idle_changes(session: ConsoleSession) -> str:
    """What the bot did on its own since the last line (scheduled runs, reminders)."""
    if session.slack is None or not session.has_changes():
        return ""
    await session.settle()
    changes, errors = session.render_changes()
    return "\n".join(x for x in (changes, *errors) if x)


def use_color(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM") != "dumb"


def plain_output(text: str) -> str:
    return _ANSI.sub("", text)


__all__ = ["HELP", "LoopThread", "plain_output", "run_interactive", "run_script", "script_lines", "use_color"]
