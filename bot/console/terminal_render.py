"""Block Kit → terminal text, with every interactive element numbered so it can be typed.

    >>> names = Names(users={"U0ALICE": "alice"}, groups={"S0DBA": "db-admins"})
    >>> r = TerminalRenderer(names)
    >>> r.mrkdwn("*Approvals* by <@U0ALICE> and <!subteam^S0DBA> :white_check_mark:")
    '*Approvals* by @alice and @db-admins ✔'

A message renders to lines; buttons, checkbox options and selects get numbers that stay the same
while the element stays on the message (``[3] (Approve)`` is still 3 after the message is updated),
and :attr:`TerminalRenderer.targets` says what each number points at, for ``click 3``.
"""

from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

# Short symbols for the emoji the bot uses; any other :code: is left as typed.
EMOJI = {
    "white_check_mark": "✔", "heavy_check_mark": "✔", "ballot_box_with_check": "☑", "large_green_circle": "●",
    "x": "✘", "no_entry": "✘", "no_entry_sign": "✘", "heavy_multiplication_x": "✘", "skull": "✘",
    "warning": "⚠", "rotating_light": "⚠",
    "hourglass": "⏳", "hourglass_flowing_sand": "⏳", "alarm_clock": "⏳", "stopwatch": "⏳",
    "white_circle": "○", "white_large_square": "□", "heavy_minus_sign": "−", "grey_question": "?",
    "repeat": "↻", "leftwards_arrow_with_hook": "↩", "rewind": "↩", "rocket": "»", "tada": "★", "lock": "⚿",
    "+1": "👍", "thumbsup": "👍",
}
_EMOJI_RE = re.compile(r":([a-z][a-z0-9_+-]*):")  # a letter first, so "14:00:00" stays a time
_LINK_RE = re.compile(r"<([^<>]+)>")
_BOLD_RE = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
INDENT = "  "
CODE_BAR = "│ "


@dataclass
class Names:
    """Who and what the ids in messages are: users, user groups (their @handle) and channels."""

    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)

    def user(self, user_id: str) -> str:
        return self.users.get(user_id, user_id)


@dataclass
class Target:
    """What a number on screen points at (see :meth:`TerminalRenderer.message`).

    kind: ``button``, ``checkbox`` (one option of a checkboxes element), ``select`` or ``input`` (in a modal).
    """

    number: int
    kind: str
    owner: tuple[str, ...]  # ("msg", channel, ts) or ("view", view_id)
    action_id: str
    value: str | None = None  # button value or checkbox option value
    label: str = ""
    block_id: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)  # select: (value, text)
    selected: bool = False  # checkbox: ticked as the message shows it

    @property
    def in_view(self) -> bool:
        return self.owner[0] == "view"


class TerminalRenderer:
    """Renders messages and modals; keeps the numbers of interactive elements stable across updates."""

    def __init__(self, names: Names, *, color: bool = False, width: int = 100) -> None:
        self.names = names
        self.color = color
        self.width = width
        self.targets: dict[int, Target] = {}
        self._numbers: dict[tuple[Any, ...], int] = {}
        self._by_owner: dict[tuple[str, ...], set[int]] = {}
        self._next = 1

    # ------------------------------------------------------------------ text

    def mrkdwn(self, text: str) -> str:
        """Slack mrkdwn as terminal text: mentions by name, links with their label, emoji as symbols.

        Code blocks (```...```) become indented lines behind a bar; *bold* stays (or turns bold with color).
        """
        parts = text.split("```")
        if len(parts) % 2 == 0:  # an unclosed fence stays text
            parts[-2:] = ["```".join(parts[-2:])]
        out: list[str] = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                body = html.unescape(part).strip("\n")
                out.append("\n".join(CODE_BAR + line for line in body.splitlines()) or CODE_BAR)
            else:
                # the fences sit on their own lines once rendered: drop the newline next to each fence
                if i > 0 and part.startswith("\n"):
                    part = part[1:]
                if i < len(parts) - 1 and part.endswith("\n"):
                    part = part[:-1]
                if part or 0 < i < len(parts) - 1:
                    out.append(self._inline(part))
        return "\n".join(out).strip("\n")

    def _inline(self, text: str) -> str:
        text = _LINK_RE.sub(lambda m: self._link(m.group(1)), text)
        text = _EMOJI_RE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
        text = html.unescape(text)
        if self.color:
            text = _BOLD_RE.sub(lambda m: f"{BOLD}{m.group(1)}{RESET}", text)
        return text

    def _link(self, inner: str) -> str:
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return "@" + (label or self.names.user(target[1:]))
        if target.startswith("#"):
            return "#" + (label or self.names.channels.get(target[1:], target[1:]))
        if target.startswith("!subteam^"):
            group = target[len("!subteam^"):]
            return "@" + (label.lstrip("@") if label else self.names.groups.get(group, group))
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return "@" + target[1:]
        return f"{label} ({target})" if label and label != target else target

    def plain(self, obj: Any) -> str:
        """A text object (plain_text or mrkdwn) as terminal text."""
        if not isinstance(obj, dict):
            return str(obj or "")
        text = str(obj.get("text", ""))
        if obj.get("type") == "mrkdwn":
            return self.mrkdwn(text)
        return _EMOJI_RE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)

    def _bold(self, text: str) -> str:
        return f"{BOLD}{text}{RESET}" if self.color else text

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.color else text

    # ------------------------------------------------------------------ numbers

    def _number(self, key: tuple[Any, ...]) -> int:
        if key not in self._numbers:
            self._numbers[key] = self._next
            self._next += 1
        return self._numbers[key]

    def _begin(self, owner: tuple[str, ...]) -> set[int]:
        """Forget the numbers ``owner`` showed before; the render registers the ones it still has."""
        for number in self._by_owner.pop(owner, set()):
            self.targets.pop(number, None)
        seen: set[int] = set()
        self._by_owner[owner] = seen
        return seen

    def forget(self, owner: tuple[str, ...]) -> None:
        """The message was deleted or the modal closed: its numbers no longer work."""
        for number in self._by_owner.pop(owner, set()):
            self.targets.pop(number, None)

    def _target(self, seen: set[int], owner: tuple[str, ...], kind: str, element: dict[str, Any],
                block_id: str | None, value: str | None = None, **extra: Any) -> Target:
        action_id = str(element.get("action_id", ""))
        number = self._number((*owner, kind, action_id, value))
        target = Target(number, kind, owner, action_id, value, block_id=block_id, **extra)
        self.targets[number] = target
        seen.add(number)
        return target

    # ------------------------------------------------------------------ blocks

    def blocks(self, blocks: list[dict[str, Any]], owner: tuple[str, ...]) -> list[str]:
        """Lines for ``blocks``; numbers interactive elements for ``owner``."""
        seen = self._begin(owner)
        lines: list[str] = []
        for block in blocks:
            lines += self._block(block, owner, seen)
        return lines

    def _text_lines(self, text: str) -> list[str]:
        out = []
        for line in text.splitlines() or [""]:
            if line.startswith(CODE_BAR) or len(line) <= self.width:
                out.append(line)
            else:
                out += textwrap.wrap(line, self.width, subsequent_indent="  ", break_on_hyphens=False,
                                     break_long_words=False) or [""]
        return out

    def _block(self, block: dict[str, Any], owner: tuple[str, ...], seen: set[int]) -> list[str]:
        kind = block.get("type")
        block_id = block.get("block_id")
        if kind == "header":
            return [self._bold(f"══ {self.plain(block.get('text'))} ══")]
        if kind == "divider":
            return [self._dim("─" * 40)]
        if kind == "section":
            lines = self._text_lines(self.plain(block.get("text"))) if block.get("text") else []
            for fld in block.get("fields", []):
                text = self.plain(fld)
                if CODE_BAR not in text:  # Slack lays "*Label*\nvalue" fields out as a compact pair
                    text = " ".join(p.strip() for p in text.splitlines() if p.strip())
                lines += [INDENT + ln for ln in self._text_lines(text)]
            accessory = block.get("accessory")
            if isinstance(accessory, dict):
                lines += self._elements([accessory], block_id, owner, seen)
            return lines
        if kind == "context":
            parts = [self.plain(e) if e.get("type") in ("mrkdwn", "plain_text") else f"[{e.get('alt_text', 'image')}]"
                     for e in block.get("elements", []) if isinstance(e, dict)]
            return [self._dim(ln) for ln in self._text_lines("  ".join(parts))]
        if kind == "actions":
            return self._elements(block.get("elements", []), block_id, owner, seen)
        if kind == "input":
            element = block.get("element") or {}
            label = self.plain(block.get("label"))
            if element.get("type") in ("plain_text_input", "number_input", "email_text_input", "url_text_input"):
                target = self._target(seen, owner, "input", element, block_id, label=label)
                hint = self.plain(element.get("placeholder")) if element.get("placeholder") else ""
                lines = [f"[{target.number}] {label}: ________" + (f"  ({hint})" if hint else "")]
            else:
                lines = [f"{label}:", *self._elements([element], block_id, owner, seen)]
            if block.get("hint"):
                lines.append(self._dim(INDENT + self.plain(block.get("hint"))))
            return lines
        if kind == "image":
            return [f"[image: {block.get('alt_text', '')}]"]
        if kind == "rich_text":
            return self._text_lines(self._rich_text(block))
        return [self._dim(f"[{kind} block]")]

    def _rich_text(self, node: Any) -> str:
        if isinstance(node, dict):
            if node.get("type") == "text":
                return str(node.get("text", ""))
            if node.get("type") == "user":
                return "@" + self.names.user(str(node.get("user_id")))
            if node.get("type") == "emoji":
                return EMOJI.get(str(node.get("name")), f":{node.get('name')}:")
            if node.get("type") == "link":
                return str(node.get("text") or node.get("url", ""))
            inner = "".join(self._rich_text(e) for e in node.get("elements", []))
            return inner + ("\n" if node.get("type") in ("rich_text_section", "rich_text_preformatted") else "")
        return ""

    def _elements(self, elements: list[dict[str, Any]], block_id: str | None, owner: tuple[str, ...],
                  seen: set[int]) -> list[str]:
        lines: list[str] = []
        buttons: list[str] = []  # consecutive buttons share a line, in the order Slack shows them

        def flush() -> None:
            if buttons:
                lines.append("  ".join(buttons))
                buttons.clear()

        for element in elements:
            if not isinstance(element, dict):
                continue
            kind = element.get("type")
            if kind != "button":
                flush()
            if kind == "button":
                label = self.plain(element.get("text"))
                target = self._target(seen, owner, "button", element, block_id, element.get("value"), label=label)
                mark = {"primary": " ▸", "danger": " !"}.get(str(element.get("style")), "")
                buttons.append(f"[{target.number}] ({label}{mark})")
            elif kind == "checkboxes":
                initial = {o.get("value") for o in element.get("initial_options", []) or []}
                for option in element.get("options", []):
                    ticked = option.get("value") in initial
                    target = self._target(seen, owner, "checkbox", element, block_id, option.get("value"),
                                          label=self.plain(option.get("text")), selected=ticked)
                    lines.append(f"[{target.number}] [{'x' if ticked else ' '}] {target.label}")
                    if option.get("description"):
                        lines += [INDENT * 3 + self._dim(ln) for ln in self.plain(option["description"]).splitlines()]
            elif kind in ("static_select", "radio_buttons", "overflow"):
                options = [(str(o.get("value")), self.plain(o.get("text"))) for o in element.get("options", [])]
                for group in element.get("option_groups", []) or []:
                    options += [(str(o.get("value")), self.plain(o.get("text"))) for o in group.get("options", [])]
                chosen = element.get("initial_option") or {}
                label = self.plain(element.get("placeholder")) if element.get("placeholder") else "choose"
                target = self._target(seen, owner, "select", element, block_id, label=label, options=options)
                current = f" = {self.plain(chosen.get('text'))}" if chosen else ""
                choices = "  ".join(f"{i}) {text}" for i, (_, text) in enumerate(options, 1))
                lines.append(f"[{target.number}] ▾ {label}{current}: {choices}")
            else:
                lines.append(self._dim(f"[{kind}]"))
        flush()
        return lines

    # ------------------------------------------------------------------ messages and modals

    def message(self, msg: Any, *, tag: str, heading: str, viewer: str | None = None,
                indent: int = 0) -> list[str]:
        """Lines for a stored message (:class:`bot.simulator.local_slack.Message`) under a ``heading`` like ``+ #2``.

        ``viewer`` is the acting user: an ephemeral message for them is marked "(only you)".
        """
        owner = ("msg", msg.channel, msg.ts)
        who = "migrabot" if msg.bot_id else "@" + self.names.user(msg.user)
        marks = []
        if msg.ephemeral_to is not None:
            marks.append("(only you)" if msg.ephemeral_to == viewer else f"(only @{self.names.user(msg.ephemeral_to)})")
        head = f"{heading} {tag} {who}" + (" " + " ".join(marks) if marks else "")
        body = self.blocks(msg.blocks or [], owner)  # also drops the numbers of elements that are gone
        if not msg.blocks:
            body = self._text_lines(self.mrkdwn(msg.text))
        if msg.reactions:
            shown = [f"{EMOJI.get(name, ':' + name + ':')} {', '.join(self.names.user(u) for u in users)}"
                     for name, users in msg.reactions.items()]
            body.append("reactions: " + "  ".join(shown))
        if getattr(msg, "replies", None):
            body.append(self._dim(f"({len(msg.replies)} thread repl{'y' if len(msg.replies) == 1 else 'ies'})"))
        pad = " " * indent
        return [pad + self._bold(head)] + [pad + INDENT + line for line in body]

    def view(self, view: dict[str, Any], view_id: str, *, heading: str, user: str | None = None) -> list[str]:
        """Lines for a modal: title, its blocks and inputs (numbered), and how to submit or cancel it."""
        title = self.plain(view.get("title"))
        who = f" for @{self.names.user(user)}" if user else ""
        lines = [self._bold(f"{heading} modal{who}: ┌ {title} ┐")]
        lines += [INDENT + line for line in self.blocks(view.get("blocks", []), ("view", view_id))]
        submit = self.plain(view.get("submit")) if view.get("submit") else None
        close = self.plain(view.get("close")) if view.get("close") else "Cancel"
        actions = (f"`submit` ({submit})  " if submit else "") + f"`cancel` ({close})"
        lines.append(INDENT + self._dim(actions))
        return lines
