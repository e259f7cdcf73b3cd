"""A console session: the real bot, the Slack stand-in and a person at the keyboard.

The same stack the end-to-end tests use (``tests/botstack.py``): the real Bolt ``AsyncApp`` served over
loopback HTTP, its Web API client pointed at :class:`bot.simulator.local_slack.LocalSlack`, and
:class:`bot.simulator.slack_requests.SlackDriver` sending signed requests (a random signing secret) as the person
acting. Nothing here takes a shortcut into the handlers::

    session = ConsoleSession(config, user="alice")
    await session.start()
    result = await session.run_line("/migrate staging")   # waits for the bot to settle
    print(result.output)                                 # what changed, rendered for a terminal
    await session.close()

Lines are parsed by :mod:`bot.console.commands`; this module does the acting and the rendering.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import build_app, http_application, start_background
from bot.config import Config
from bot.console.commands import ConsoleError, dispatch
from bot.console.terminal_render import Names, Target, TerminalRenderer
from bot.redact import redact
from bot.simulator.local_slack import LocalSlack, Message
from bot.simulator.slack_requests import SlackDriver
from state.store import open_store

__all__ = ["ConsoleError", "ConsoleSession"]

log = logging.getLogger(__name__)

DEFAULT_USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
DEFAULT_GROUP_MEMBERS = ("U0CAROL", "U0DAVE")  # who is in a user group the configuration names
DEFAULT_CHANNEL = ("C0DEPLOYS", "deploys")
SETTLE_TIMEOUT = 30 * 60.0  # a long migration may run for a while; Ctrl-C leaves earlier


@dataclass
class LineResult:
    ok: bool
    output: str


@dataclass
class People:
    """The Slack users and user groups of the session (names are what people type: ``/as bob``)."""

    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    groups: dict[str, list[str]] = field(default_factory=dict)  # S… id -> member user ids
    handles: dict[str, str] = field(default_factory=dict)  # S… id -> handle without "@"

    def user_id(self, name: str) -> str | None:
        wanted = name.strip().lstrip("@").lower()
        for uid, uname in self.users.items():
            if uname.lower() == wanted or uid.lower() == wanted:
                return uid
        return None

    def add_user(self, name: str) -> str:
        """Add ``name`` (id ``U0NAME``) unless known; returns the user id."""
        known = self.user_id(name)
        if known:
            return known
        clean = re.sub(r"[^a-z0-9._-]", "", name.strip().lstrip("@").lower())
        if not clean:
            raise ConsoleError(f'"{name}" is not a usable name; use letters and digits, like "erin"')
        uid = "U0" + re.sub(r"[^A-Z0-9]", "", clean.upper())
        self.users[uid] = clean
        return uid


def people_for(config: Config, users: dict[str, str] | None = None,
               groups: dict[str, tuple[str, list[str]]] | None = None) -> People:
    """The default people plus everyone the configuration names (approvers, requesters, operators).

    A user id the defaults lack gets a name from its id (``U0ERIN`` → ``erin``); a user group
    (``S…``) starts with carol and dave as members unless ``groups`` says otherwise.
    """
    people = People(users=dict(users or DEFAULT_USERS))
    for sid, (handle, members) in (groups or {}).items():
        people.groups[sid] = list(members)
        people.handles[sid] = handle
    for env in config.environments.values():
        for ref in (*env.approvers, *env.requesters, *env.operators):
            if ref.startswith("S") and ref not in people.groups:
                people.groups[ref] = [m for m in DEFAULT_GROUP_MEMBERS if m in people.users]
                people.handles[ref] = re.sub(r"^s0", "", ref.lower())
            elif ref.startswith(("U", "W")) and ref not in people.users:
                people.users[ref] = re.sub(r"^[uw]0?", "", ref.lower()) or ref.lower()
    return people


def channels_for(config: Config) -> tuple[dict[str, str], str]:
    """Every channel the configuration names (``#name`` or an id), and the one the console types in."""
    channels: dict[str, str] = {}
    first: str | None = None
    for env in config.environments.values():
        if not env.channel:
            continue
        ref = env.channel.strip()
        if ref.startswith("#") or not re.fullmatch(r"[CGD][A-Z0-9]+", ref):
            name = ref.lstrip("#")
            cid = next((c for c, n in channels.items() if n == name), None) or \
                "C0" + (re.sub(r"[^A-Z0-9]", "", name.upper()) or "CHANNEL")
        else:
            cid, name = ref, ref.lower()
        channels.setdefault(cid, name)
        first = first or cid
    if not channels:
        channels[DEFAULT_CHANNEL[0]] = DEFAULT_CHANNEL[1]
    return channels, first or next(iter(channels))


class ConsoleSession:
    """The whole bot without Slack; see the module docstring."""

    def __init__(self, config: Config, *, user: str = "alice", people: People | None = None,
                 state_path: str | Path | None = None, color: bool = False, width: int = 100,
                 socket_mode: bool = False) -> None:
        """``socket_mode``: reach the bot over the stand-in's Socket Mode server, as `migrabot serve`
        does by default, instead of signed HTTP."""
        self.config = config
        self.socket_mode = socket_mode
        self._socket_handler: Any = None
        self.people = people or people_for(config)
        uid = self.people.user_id(user)
        if uid is None:
            raise ConsoleError(f'no user "{user}"; known users: {", ".join(self.people.users.values())}')
        self.user = uid
        self.channels, self.channel = channels_for(config)
        self.state_path = state_path
        self.names = Names(users=self.people.users, groups=self.people.handles, channels=self.channels)
        self.renderer = TerminalRenderer(self.names, color=color, width=width)
        self.slack: LocalSlack | None = None
        self.driver: SlackDriver | None = None
        self.wf: Any = None
        self._runner: web.AppRunner | None = None
        self._store: Any = None
        self._scheduler: Any = None
        self._tmp_state: Any = None
        self._events: list[tuple[str, str | None, str]] = []
        self._msg_numbers: dict[tuple[str, str], int] = {}
        self._typed: dict[str, dict[str, str]] = {}  # view id -> block_id -> text typed for its input
        self._picked: dict[str, dict[str, dict[str, Any]]] = {}  # view id -> block_id -> value object
        self._calls_seen = 0
        self.last_output = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Stand up LocalSlack, the bot's HTTP endpoint and the signed driver (a few hundred ms)."""
        self.slack = LocalSlack(users=self.people.users, channels=self.channels, usergroups=self.people.groups)
        base_url = await self.slack.start()
        self.slack.on_change(self._on_change)
        if self.state_path is None:
            # a fresh state per session: run messages in a persistent state point at Slack messages
            # this stand-in never saw
            self._tmp_state = tempfile.TemporaryDirectory(prefix="migrabot-console-")
            path: str | Path = Path(self._tmp_state.name) / "state.sqlite3"
        else:
            path = self.state_path
        self._store = open_store(path)
        secret = secrets.token_hex(16)
        app, self.wf = build_app(self.config, self._store, token=self.slack.bot_token,
                                 signing_secret=None if self.socket_mode else secret,
                                 api_url=base_url, update_interval=0.05)
        if self.socket_mode:
            self._socket_handler = AsyncSocketModeHandler(app, self.slack.app_token)
            await self._socket_handler.connect_async()
            await self.slack.socket.wait_connected()
            self.driver = SlackDriver(None, secret, self.slack, timeout=60.0, socket_mode=True)
        else:
            self._runner = web.AppRunner(http_application(app, self.wf), access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/slack/events"
            self.driver = SlackDriver(url, secret, self.slack, timeout=60.0)
        self._scheduler = await start_background(self.wf)

    async def close(self) -> None:
        """Stop the bot (background work cancelled), the endpoint and the stand-in. Idempotent."""
        if self._scheduler is not None:
            try:
                self._scheduler.shutdown(wait=False)
            except Exception:  # already stopped
                pass
            self._scheduler = None
        if self.wf is not None:
            await self.wf.close()
            self.wf = None
        if self.driver is not None:
            await self.driver.close()
            self.driver = None
        if self._socket_handler is not None:
            await self._socket_handler.close_async()
            self._socket_handler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.slack is not None:
            await self.slack.stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._tmp_state is not None:
            self._tmp_state.cleanup()
            self._tmp_state = None

    async def settle(self) -> None:
        """Wait until the bot finished what the last request started (background work and Slack calls)."""
        assert self.slack is not None
        # Bolt acks events before their listener runs, so work may start after the request returned:
        # settle in rounds until a round (at least the third) sees no new Slack call
        rounds = 0
        while True:
            seen = len(self.slack.calls)
            await asyncio.sleep(0.02)
            if self.wf is not None:
                await self.wf.settle(timeout=SETTLE_TIMEOUT)
            await self.slack.wait_idle(quiet=0.05, timeout=SETTLE_TIMEOUT)
            rounds += 1
            if rounds >= 3 and len(self.slack.calls) == seen:
                break
        if self.wf is not None:
            await self.wf.settle(timeout=SETTLE_TIMEOUT)

    # ------------------------------------------------------------------ lines

    async def run_line(self, line: str) -> LineResult:
        """Act on one typed line, wait for the bot to settle, and return what changed, rendered."""
        notes: list[str] = []
        try:
            note = await dispatch(self, line)
            if note:
                notes.append(note)
            ok = True
        except ConsoleError as exc:
            notes.append(f"✘ {redact(str(exc))}")
            ok = False
        except Exception as exc:  # a broken request must not end the session; say what happened
            log.debug("console line %r failed", line, exc_info=True)
            notes.append(redact(f"✘ could not send that to the bot: {type(exc).__name__}: {exc} "
                                "(run with -v for details)"))
            ok = False
        if self.slack is not None:
            try:
                await self.settle()
            except TimeoutError as exc:
                notes.append(f"⏳ the bot is still working ({exc}); `wait` or `show` later")
        changes, slack_errors = self.render_changes()
        output = "\n".join(x for x in (*([changes] if changes else []), *notes, *slack_errors) if x)
        if not line.strip().lower().startswith("expect "):  # several expects check the same output
            self.last_output = output
        return LineResult(ok and not slack_errors, output)

    # ------------------------------------------------------------------ what changed

    def has_changes(self) -> bool:
        """Whether the bot changed something since the last render (e.g. scheduled work while idle)."""
        return bool(self._events)

    def _on_change(self, kind: str, channel: str | None, ref: str) -> None:
        self._events.append((kind, channel, ref))

    def message_number(self, channel: str, ts: str) -> int:
        key = (channel, ts)
        if key not in self._msg_numbers:
            self._msg_numbers[key] = len(self._msg_numbers) + 1
        return self._msg_numbers[key]

    def message_by_number(self, number: int) -> Message:
        assert self.slack is not None
        for (channel, ts), n in self._msg_numbers.items():
            if n == number:
                msg = self.slack.message(channel, ts)
                if msg is None:
                    raise ConsoleError(f"message #{number} was deleted")
                return msg
        raise ConsoleError(f"there is no message #{number}; message numbers are shown like #2")

    def render_message(self, msg: Message, heading: str) -> list[str]:
        number = self.message_number(msg.channel, msg.ts)
        indent = 0
        tag = f"#{number}"
        if msg.thread_ts and msg.thread_ts != msg.ts:
            indent = 4
            tag = f"#{number} ↳ in thread of #{self.message_number(msg.channel, msg.thread_ts)}"
        return self.renderer.message(msg, tag=tag, heading=heading, viewer=self.user, indent=indent)

    def render_changes(self) -> tuple[str, list[str]]:
        """Everything that changed since the last call (each message once, as it is now) and Slack's errors."""
        assert self.slack is not None
        events, self._events = self._events, []
        order: list[tuple[str, ...]] = []
        first_kind: dict[tuple[str, ...], str] = {}
        gone: set[tuple[str, ...]] = set()
        for kind, channel, ref in events:
            key: tuple[str, ...] = ("view", ref) if channel is None else ("msg", channel, ref)
            if key not in first_kind:
                order.append(key)
                first_kind[key] = kind
            if kind in ("deleted", "view_closed"):
                gone.add(key)
        lines: list[str] = []
        for key in order:
            kind = first_kind[key]
            if key[0] == "msg":
                _, channel, ts = key
                number = self.message_number(channel, ts)
                msg = self.slack.message(channel, ts)
                if key in gone or msg is None:
                    self.renderer.forget(key)
                    if kind not in ("posted", "ephemeral"):
                        lines.append(f"- deleted #{number}")
                    continue
                fresh = kind in ("posted", "ephemeral")
                lines += self.render_message(msg, "+" if fresh else "~ updated")
            else:
                view_id = key[1]
                view = self.slack.view(view_id)
                if key in gone or view is None:
                    self.renderer.forget(key)
                    self._typed.pop(view_id, None)
                    self._picked.pop(view_id, None)
                    lines.append("- modal closed")
                    continue
                heading = "+" if kind in ("view_opened", "view_pushed") else "~ updated"
                lines += self.renderer.view(view.view, view_id, heading=heading, user=view.user)
        calls = self.slack.calls[self._calls_seen:]
        self._calls_seen = len(self.slack.calls)
        errors = []
        for call in calls:
            if call.ok:
                continue
            if call.method.startswith("ack."):
                errors.append(f"✘ Slack would show: {call.method[4:]} failed with the error {call.error}")
            else:
                detail = "; ".join(call.response.get("response_metadata", {}).get("messages", [])[:3])
                text = f"✘ Slack rejected {call.method}: {call.error}" + (f" ({detail})" if detail else "")
                errors.append(redact(text))
        return "\n".join(lines), errors

    def show(self, number: int | None = None) -> str:
        """Re-print message ``number`` (with its thread) or every message of the channel."""
        assert self.slack is not None
        if number is not None:
            msgs = [self.message_by_number(number)]
        else:
            msgs = self.slack.messages(self.channel) + [
                m for m in self.slack.ephemerals(self.channel) if m.ephemeral_to == self.user]
            msgs.sort(key=lambda m: float(m.ts))
        lines: list[str] = []
        for msg in msgs:
            lines += self.render_message(msg, "=")
            for reply in msg.replies:
                lines += self.render_message(reply, "=")
        for view in self.slack.open_views(self.user):
            lines += self.renderer.view(view.view, view.id, heading="=", user=view.user)
        return "\n".join(lines) or "(no messages yet)"

    # ------------------------------------------------------------------ acting

    def _need(self) -> tuple[LocalSlack, SlackDriver]:
        if self.slack is None or self.driver is None:
            raise ConsoleError("the console is not running")
        return self.slack, self.driver

    def target(self, number: int) -> Target:
        target = self.renderer.targets.get(number)
        if target is None:
            raise ConsoleError(f"there is no button or option [{number}] on screen now; "
                               "`show` prints the messages with their current numbers")
        return target

    def _recency(self, target: Target) -> tuple[float, int]:
        return (float("inf") if target.in_view else float(target.owner[2]), target.number)

    def find(self, label: str, kinds: tuple[str, ...]) -> Target:
        """The element labelled ``label`` (case-insensitive; a unique prefix will do), newest message first."""
        wanted = _label_key(label)
        pool = [t for t in self.renderer.targets.values() if t.kind in kinds
                and (not t.in_view or self._view_owner(t) in (None, self.user))]
        for exact in (True, False):
            found = [t for t in pool if (_label_key(t.label) == wanted if exact
                                         else _label_key(t.label).startswith(wanted))]
            if found:
                return max(found, key=self._recency)
        shown = ", ".join(sorted({t.label for t in pool})) or "none"
        raise ConsoleError(f'nothing labelled "{label}" on screen; labels now: {shown}')

    def unticked(self) -> list[int]:
        """The unticked checkbox options of the newest message (or modal) that has checkboxes."""
        boxes = [t for t in self.renderer.targets.values() if t.kind == "checkbox"]
        if not boxes:
            raise ConsoleError("no checkboxes on screen")
        newest = max(boxes, key=self._recency).owner
        todo = [t.number for t in boxes if t.owner == newest and not t.selected]
        if not todo:
            raise ConsoleError(f"every checkbox of {self._owner_name(newest)} is already ticked")
        return sorted(todo)

    def last_message(self) -> int:
        """The number of the newest top-level message everyone sees (e.g. the run message just posted)."""
        assert self.slack is not None
        msgs = self.slack.messages(self.channel)
        if not msgs:
            raise ConsoleError("there is no message yet")
        return self.message_number(msgs[-1].channel, msgs[-1].ts)

    def _owner_name(self, owner: tuple[str, ...]) -> str:
        return "the modal" if owner[0] == "view" else f"#{self.message_number(owner[1], owner[2])}"

    def _view_owner(self, target: Target) -> str | None:
        view = self.slack.view(target.owner[1]) if self.slack else None
        return view.user if view else None

    def _view_for_user(self, target: Target) -> str:
        slack, _ = self._need()
        view_id = target.owner[1]
        view = slack.view(view_id)
        if view is None:
            raise ConsoleError(f"[{target.number}] was in a modal that is closed now")
        if view.user not in (None, self.user):
            raise ConsoleError(f"that modal is open for @{self.names.user(view.user)}; "
                               f"switch with `/as {self.names.user(view.user)}`")
        return view_id

    async def slash(self, command: str, text: str) -> None:
        _, driver = self._need()
        await driver.slash(self.user, command, text, self.channel)

    async def click(self, number: int) -> None:
        target = self.target(number)
        if target.kind == "checkbox":
            await self.tick([number])
            return
        if target.kind == "select":
            raise ConsoleError(f"[{number}] is a menu; choose with `pick {number} OPTION`")
        if target.kind == "input":
            raise ConsoleError(f"[{number}] is a text field; fill it with `type TEXT`, then `submit`")
        _, driver = self._need()
        try:
            if target.in_view:
                await driver.click_in_view(self.user, self._view_for_user(target), target.action_id, target.value)
            else:
                _, channel, ts = target.owner
                await driver.click(self.user, channel, ts, target.action_id, target.value)
        except LookupError as exc:
            raise ConsoleError(f"[{number}] cannot be pressed any more ({exc})") from None

    async def tick(self, numbers: list[int]) -> None:
        """Toggle checkbox options; each checkbox group gets its new full selection, as Slack sends it."""
        targets = [self.target(n) for n in numbers]
        for t in targets:
            if t.kind != "checkbox":
                raise ConsoleError(f"[{t.number}] is not a checkbox; press buttons with `click {t.number}`")
        groups: dict[tuple[Any, ...], list[Target]] = {}
        for t in targets:
            groups.setdefault((t.owner, t.action_id, t.block_id), []).append(t)
        _, driver = self._need()
        for (owner, action_id, block_id), chosen in groups.items():
            options = sorted((t for t in self.renderer.targets.values() if t.kind == "checkbox"
                              and t.owner == owner and t.action_id == action_id and t.block_id == block_id),
                             key=lambda t: t.number)
            flip = {t.number for t in chosen}
            selected = [t.value for t in options if t.selected != (t.number in flip)]
            if owner[0] == "view":
                view_id = self._view_for_user(chosen[0])
                element = self._view_element(view_id, block_id, action_id)
                opts = [copy.deepcopy(o) for o in element.get("options", []) if o.get("value") in selected]
                self._picked.setdefault(view_id, {})[str(block_id)] = {
                    "action_id": action_id, "value": {"type": "checkboxes", "selected_options": opts}}
                for t in options:
                    t.selected = t.value in selected
                continue
            _, channel, ts = owner
            try:
                await driver.check(self.user, channel, ts, action_id, [v for v in selected if v is not None])
            except LookupError as exc:
                raise ConsoleError(f"those checkboxes cannot be ticked any more ({exc})") from None

    def _view_element(self, view_id: str, block_id: str | None, action_id: str) -> dict[str, Any]:
        slack, _ = self._need()
        view = slack.view(view_id)
        for block in (view.view.get("blocks", []) if view else []):
            if block.get("block_id") != block_id:
                continue
            candidates = [block.get("element"), block.get("accessory"), *block.get("elements", [])]
            for element in candidates:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return element
        raise ConsoleError("that modal element is gone")

    async def pick(self, number: int, choice: str) -> str:
        """Choose an option of select ``number`` by its position, value or text; returns the option text."""
        target = self.target(number)
        if target.kind != "select":
            raise ConsoleError(f"[{number}] is not a menu; `pick` chooses in menus shown as [N] ▾")
        value = _choose(target.options, choice)
        if value is None:
            listed = ", ".join(f"{i}) {text}" for i, (_, text) in enumerate(target.options, 1))
            raise ConsoleError(f'no option "{choice}" in [{number}]; options: {listed}')
        text = next(t for v, t in target.options if v == value)
        _, driver = self._need()
        if target.in_view:
            view_id = self._view_for_user(target)
            element = self._view_element(view_id, target.block_id, target.action_id)
            option = next(copy.deepcopy(o) for o in _all_options(element) if str(o.get("value")) == value)
            self._picked.setdefault(view_id, {})[str(target.block_id)] = {
                "action_id": target.action_id, "value": {"type": element.get("type"), "selected_option": option}}
            return f"  ▾ {text} (sent with `submit`)"
        _, channel, ts = target.owner
        try:
            await driver.select(self.user, channel, ts, target.action_id, value)
        except LookupError as exc:
            raise ConsoleError(f"[{number}] cannot be used any more ({exc})") from None
        return ""

    async def react(self, number: int, emoji: str, removed: bool = False) -> None:
        msg = self.message_by_number(number)
        if msg.is_ephemeral:
            raise ConsoleError(f"#{number} is only visible to one person; Slack allows no reactions on it")
        name = emoji.strip().strip(":")
        if not re.fullmatch(r"[a-z0-9_+-]+", name):
            raise ConsoleError(f'"{emoji}" is not an emoji code; write it like :white_check_mark:')
        if removed and self.user not in msg.reactions.get(name, []):
            raise ConsoleError(f"you have not reacted :{name}: on #{number}")
        _, driver = self._need()
        await driver.react(self.user, msg.channel, msg.ts, name, removed=removed)

    def switch_user(self, name: str) -> str:
        uid = self.people.user_id(name)
        if uid is None:
            raise ConsoleError(f'no user "{name}"; known: {", ".join(self.people.users.values())} '
                               f"(add one with `user {name}`)")
        self.user = uid
        return f"now acting as @{self.names.user(uid)}"

    def _top_view(self) -> str:
        slack, _ = self._need()
        views = slack.open_views(self.user)
        if not views:
            others = [v for u in self.people.users for v in slack.open_views(u)]
            hint = f" (@{self.names.user(others[-1].user)} has one open)" if others and others[-1].user else ""
            raise ConsoleError(f"no modal is open for you{hint}")
        return views[-1].id

    def _inputs(self, view_id: str) -> list[Target]:
        return sorted((t for t in self.renderer.targets.values() if t.kind == "input" and t.owner == ("view", view_id)),
                      key=lambda t: t.number)

    def type_text(self, text: str, number: int | None = None) -> str:
        view_id = self._top_view()
        inputs = self._inputs(view_id)
        if number is not None:
            chosen = [t for t in inputs if t.number == number]
            if not chosen:
                raise ConsoleError(f"[{number}] is not a text field of the open modal")
        elif len(inputs) != 1:
            if not inputs:
                raise ConsoleError("the open modal has no text field")
            raise ConsoleError("the modal has several text fields; say which: `type N TEXT`")
        else:
            chosen = inputs
        self._typed.setdefault(view_id, {})[str(chosen[0].block_id)] = text
        return f"  typed into [{chosen[0].number}] {chosen[0].label}: {text}"

    async def submit(self, text: str | None = None) -> str:
        """Submit the open modal (``text`` first fills its single text field); shows the bot's field errors."""
        if text is not None:
            self.type_text(text)
        view_id = self._top_view()
        _, driver = self._need()
        values: dict[str, dict[str, Any]] = {}
        for target in self._inputs(view_id):
            typed = self._typed.get(view_id, {}).get(str(target.block_id))
            if typed is not None:
                values.setdefault(str(target.block_id), {})[target.action_id] = typed
        for block_id, chosen in self._picked.get(view_id, {}).items():
            values.setdefault(block_id, {})[chosen["action_id"]] = chosen["value"]
        try:
            answer = await driver.submit_view(self.user, view_id, values)
        except LookupError as exc:
            raise ConsoleError(f"the modal cannot be submitted: {exc}") from None
        body = answer.body if isinstance(answer.body, dict) else {}
        if body.get("response_action") == "errors":
            errors = body.get("errors") or {}
            return "\n".join(f"  ✘ {msg}" for msg in errors.values()) + "\n  (the modal stays open: fix and `submit`)"
        return ""

    async def cancel(self) -> None:
        view_id = self._top_view()
        _, driver = self._need()
        await driver.close_view(self.user, view_id)


def _label_key(label: str) -> str:
    """A label as people type it: no leading symbols (emoji), case and spacing ignored."""
    return re.sub(r"\s+", " ", re.sub(r"^[^\w]+", "", label.strip().strip("\"'"))).lower()


def _all_options(element: dict[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options", [])
    return options


def _choose(options: list[tuple[str, str]], choice: str) -> str | None:
    """The option value ``choice`` means: its position (1-based), its value, or its text (case-insensitive)."""
    choice = choice.strip()
    if choice.isdigit() and 1 <= int(choice) <= len(options):
        return options[int(choice) - 1][0]
    for value, text in options:
        if choice == value or choice.lower() == text.lower():
            return value
    matches = [v for v, t in options if t.lower().startswith(choice.lower())]
    return matches[0] if len(matches) == 1 else None
