"""What can be typed in ``migrabot console``: Slack's slash commands plus a few words to act on messages.

    >>> is_quit("exit"), is_quit("/migrate staging")
    (True, False)

:func:`dispatch` acts on one line through a :class:`bot.console.session.ConsoleSession` and returns an
optional note to print; a line that cannot be acted on raises :class:`ConsoleError`.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the session imports this module to dispatch lines: the annotation only
    from bot.console.session import ConsoleSession



class ConsoleError(Exception):
    """A line that could not be acted on (unknown command, no such number...): one sentence."""


HELP = """\
Type what you would type in Slack, as the acting user (shown in the prompt):
  /migrate staging            /migrate prod            /migrate help
  /rollback prod              /db report staging       (any slash command goes to the bot)
Act on what the bot posted (numbers in [brackets] are buttons, checkboxes and menus; #N are messages):
  click N   or just  N        press button N  (or click LABEL: click Approve)
  tick N [N ...]              toggle checkboxes (the whole new selection is sent, as Slack does);
                              tick all  ticks every unticked box of the newest message; tick LABEL
  pick N OPTION               choose in menu N (option number, value or text); pick "LABEL" OPTION
  react #N :white_check_mark: / unreact #N :white_check_mark:   (#N or last: the newest message)
  /as bob                     act as someone else (e.g. to approve)
  type TEXT / submit [TEXT]   fill the open modal's text field / submit it;  cancel  closes it
Other:
  show [#N|last]              print the messages (or message N) again with their numbers
  users / user NAME / group S0ID [@handle] NAME ...    list / add users, set a user group's members
  wait [SECONDS]              let scheduled work happen (default 5 s) and print what changed
  expect TEXT                 (scripts) fail unless the previous line's output contains TEXT
  help                        this list;   quit / exit / Ctrl-D   leave"""

QUIT_WORDS = {"quit", "exit", "/quit", "/exit", ":q"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_quit(line: str) -> bool:
    return line.strip().lower() in QUIT_WORDS


def _number(word: str, what: str = "number") -> int:
    cleaned = word.strip().lstrip("#[").rstrip("]")
    if not cleaned.isdigit():
        raise ConsoleError(f'"{word}" is not a {what}; use the number shown in brackets, like 3')
    return int(cleaned)


def _is_number(word: str) -> bool:
    return bool(re.fullmatch(r"#?\[?\d+\]?", word.strip()))


def _words(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


async def _click(s: ConsoleSession, rest: str) -> str | None:
    ref = rest.strip()
    if not ref:
        raise ConsoleError("say which button: `click N` or `click LABEL`")
    await s.click(_number(ref) if _is_number(ref) else s.find(ref, ("button", "checkbox")).number)
    return None


async def _tick(s: ConsoleSession, rest: str) -> str | None:
    words = _words(rest.replace(",", " "))
    if not words:
        raise ConsoleError("say which checkboxes: `tick N [N ...]`, `tick all` or `tick LABEL`")
    if [w.lower() for w in words] == ["all"]:
        numbers = s.unticked()
    elif all(_is_number(w) for w in words):
        numbers = [_number(w) for w in words]
    else:
        numbers = [s.find(rest, ("checkbox",)).number]
    await s.tick(numbers)
    return None


async def _pick(s: ConsoleSession, rest: str) -> str | None:
    words = _words(rest)
    if len(words) < 2:
        raise ConsoleError('say which menu and option: `pick N OPTION` (or `pick "MENU LABEL" OPTION`)')
    menu = _number(words[0]) if _is_number(words[0]) else s.find(words[0], ("select",)).number
    return await s.pick(menu, " ".join(words[1:])) or None


async def _react(s: ConsoleSession, rest: str, removed: bool = False) -> str | None:
    words = _words(rest)
    if len(words) != 2:
        raise ConsoleError(f"`{'unreact' if removed else 'react'} #N :emoji:`, e.g. react #2 :white_check_mark:")
    number = s.last_message() if words[0].lower() == "last" else _number(words[0], "message number")
    await s.react(number, words[1], removed=removed)
    return None


async def _as(s: ConsoleSession, rest: str) -> str | None:
    if not rest.strip():
        return f"acting as @{s.names.user(s.user)}"
    return s.switch_user(rest.strip())


async def _type(s: ConsoleSession, rest: str) -> str | None:
    first, _, tail = rest.strip().partition(" ")
    if first.isdigit() and tail and any(t.number == int(first) for t in s.renderer.targets.values()
                                        if t.kind == "input"):
        return s.type_text(tail, int(first))
    if not rest.strip():
        raise ConsoleError("`type TEXT` fills the open modal's text field")
    return s.type_text(rest.strip())


async def _submit(s: ConsoleSession, rest: str) -> str | None:
    return await s.submit(rest.strip() if rest.strip() else None) or None


async def _cancel(s: ConsoleSession, rest: str) -> str | None:
    await s.cancel()
    return None


async def _show(s: ConsoleSession, rest: str) -> str | None:
    ref = rest.strip().lower()
    return s.show(None if not ref else s.last_message() if ref == "last" else _number(ref, "message number"))


async def _users(s: ConsoleSession, rest: str) -> str | None:
    lines = [f"  {'*' if uid == s.user else ' '} @{name} ({uid})" for uid, name in s.people.users.items()]
    for sid, members in s.people.groups.items():
        names = ", ".join("@" + s.names.user(m) for m in members) or "nobody"
        lines.append(f"    @{s.people.handles.get(sid, sid)} ({sid}): {names}")
    return "\n".join(lines)


async def _user(s: ConsoleSession, rest: str) -> str | None:
    if not rest.strip():
        raise ConsoleError("`user NAME` adds a user (then `/as NAME`)")
    uid = s.people.add_user(rest.strip())
    assert s.slack is not None
    s.slack.users[uid] = s.people.users[uid]
    return f"@{s.people.users[uid]} is user {uid}"


async def _group(s: ConsoleSession, rest: str) -> str | None:
    words = _words(rest)
    if not words or not words[0].upper().startswith("S"):
        raise ConsoleError("`group S0ID [@handle] NAME ...` sets who is in a user group (ids start with S)")
    sid = words[0].upper()
    names = words[1:]
    if names and names[0].startswith("@") and s.people.user_id(names[0]) is None:
        s.people.handles[sid] = names.pop(0).lstrip("@")
    members = []
    for name in names:
        uid = s.people.user_id(name)
        if uid is None:
            raise ConsoleError(f'no user "{name}"; add them first with `user {name}`')
        members.append(uid)
    s.people.groups[sid] = members
    s.people.handles.setdefault(sid, sid.lower())
    assert s.slack is not None
    s.slack.usergroups[sid] = list(members)
    return await _users(s, "")


async def _wait(s: ConsoleSession, rest: str) -> str | None:
    try:
        seconds = float(rest) if rest.strip() else 5.0
    except ValueError:
        raise ConsoleError("`wait SECONDS`, e.g. wait 10") from None
    await asyncio.sleep(max(0.0, min(seconds, 3600.0)))
    return None


async def _expect(s: ConsoleSession, rest: str) -> str | None:
    wanted = rest.strip().strip("\"'")
    if not wanted:
        raise ConsoleError("`expect TEXT`: which text should the previous output contain?")
    if wanted not in _ANSI.sub("", s.last_output):
        raise ConsoleError(f'expected "{wanted}" in the output of the previous line, but it is not there')
    return "  ✔ found"


async def _help(s: ConsoleSession, rest: str) -> str | None:
    return HELP


Handler = Callable[["ConsoleSession", str], Awaitable[str | None]]
WORDS: dict[str, Handler] = {
    "click": _click, "press": _click, "tick": _tick, "check": _tick, "untick": _tick, "pick": _pick,
    "select": _pick, "react": _react, "unreact": lambda s, r: _react(s, r, removed=True), "as": _as,
    "/as": _as, "type": _type, "submit": _submit, "cancel": _cancel, "close": _cancel, "show": _show,
    "users": _users, "user": _user, "group": _group, "wait": _wait, "expect": _expect, "help": _help,
    "?": _help,
}


async def dispatch(session: ConsoleSession, line: str) -> str | None:
    """Act on ``line``; returns a note for the transcript (or None)."""
    line = line.strip()
    if not line:
        return None
    word, _, rest = line.partition(" ")
    handler = WORDS.get(word.lower())
    if handler is not None:
        return await handler(session, rest)
    if _is_number(word) and not rest:
        await session.click(_number(word))
        return None
    if word.startswith("/") and len(word) > 1:
        await session.slash(word, rest.strip())
        return None
    raise ConsoleError(f'unknown command "{word}"; type `help` for what you can type')
