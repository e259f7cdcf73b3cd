"""A local stand-in for the Slack Web API: records every call and rejects what real Slack would reject.

Slack cannot be reached from the test machines, so the end-to-end tests and ``migrabot console`` point the
bot's ``AsyncWebClient`` at this aiohttp server instead. It answers with Slack's real shapes (errors are
``{"ok": false, "error": ...}`` with HTTP 200), keeps channel state (messages, threads, reactions,
ephemeral messages, open modals) and serves ``response_url``s::

    slack = LocalSlack(users={"U1": "alice"}, channels={"C1": "deploys"})
    base_url = await slack.start()                      # http://127.0.0.1:PORT/api/
    client = AsyncWebClient(token=slack.bot_token, base_url=base_url)
    await client.chat_postMessage(channel="C1", text="hi")
    assert slack.messages("C1")[0].text == "hi"
    await slack.stop()

What it enforces (each one a bug real Slack would surface in production): bearer token, known channels
and users, ``no_text``, Block Kit limits (:mod:`bot.simulator.blockkit_check`) -> ``invalid_blocks`` /
``invalid_arguments``,
``message_not_found`` / ``cant_update_message``, trigger ids valid once for 3 s, 5 uses per ``response_url``,
channels of every kind (public, private, DMs, group DMs) with members: ``chat.update`` and the other
methods that take a message need the channel *id*, posting where the bot is not a member fails
(``not_in_channel`` / ``channel_not_found``), ``conversations.join`` only for public channels; and,
when ``rate_limits`` is given, HTTP 429 with ``Retry-After`` beyond the per-channel posting limit and
the per-method tiers (see :class:`RateLimits`).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import json
import logging
import math
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.simulator.blockkit_check import check_message, check_view
from bot.simulator.socket_mode import SocketModeHub

log = logging.getLogger(__name__)

TRIGGER_TTL = 3.0  # seconds a trigger_id is valid for views.open / views.push
RESPONSE_URL_USES = 5  # Slack accepts 5 posts per response_url ...
RESPONSE_URL_TTL = 30 * 60.0  # ... within 30 minutes
MAX_VIEW_STACK = 3
JSON_FIELDS = ("blocks", "view", "attachments", "metadata")  # JSON strings when sent form-encoded

ChangeListener = Callable[[str, "str | None", str], Any]

# Slack's tiers, requests per minute per method (https://api.slack.com/docs/rate-limits): Tier 2 20+,
# Tier 3 50+, Tier 4 100+; chat.postMessage is "special": about 1 message per second per channel.
METHOD_TIERS: dict[str, int] = {
    "chat.update": 50, "chat.delete": 50, "conversations.info": 50, "conversations.join": 50,
    "conversations.history": 50, "conversations.replies": 50, "chat.getPermalink": 100,
    "chat.postEphemeral": 100, "views.open": 100, "views.update": 100, "views.push": 100, "users.info": 100,
    "reactions.add": 50, "reactions.remove": 50, "usergroups.users.list": 20, "apps.connections.open": 50,
}


@dataclass
class RateLimits:
    """Slack's rate limits, scaled for tests: ``time_factor`` 0.1 makes every window ten times shorter.

    Posting: a burst of ``post_burst`` messages per channel, then ``post_per_second`` (Slack: "1 per
    second. Short bursts >1 allowed", https://api.slack.com/docs/rate-limits). Other methods: their
    tier per minute (``METHOD_TIERS``), with a burst of a tenth of it. Over a limit Slack answers
    HTTP 429, ``Retry-After: <seconds>`` and ``{"ok": false, "error": "ratelimited"}``
    (https://api.slack.com/docs/rate-limits#headers).
    """

    post_burst: int = 3
    post_per_second: float = 1.0
    time_factor: float = 1.0
    tiers: dict[str, int] = field(default_factory=lambda: dict(METHOD_TIERS))


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.when = capacity, time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.when) * self.rate)
        self.when = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Conversation:
    """A conversation the stand-in knows: its kind, name, members and whether the bot is in it."""

    id: str
    kind: str  # public | private | im | mpim
    name: str = ""
    members: set[str] = field(default_factory=set)
    bot_member: bool = True

    def to_api(self, num_members: bool = False) -> dict[str, Any]:
        """As ``conversations.info`` returns it (https://api.slack.com/methods/conversations.info)."""
        out: dict[str, Any] = {"id": self.id, "is_channel": self.kind == "public",
                               "is_group": self.kind == "private", "is_im": self.kind == "im",
                               "is_mpim": self.kind == "mpim", "is_private": self.kind != "public",
                               "is_archived": False, "is_member": self.bot_member}
        if self.kind == "im":
            out["user"] = next(iter(self.members), "")
        else:
            out["name"] = self.name
        if num_members and self.kind != "im":
            out["num_members"] = len(self.members) + (1 if self.bot_member else 0)
        return out


class SlackApiError(Exception):
    """Raised inside a method handler: becomes ``{"ok": false, "error": code, **extra}``."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass
class Call:
    """One Web API call (or ``response_url`` post, method ``"response_url"``) and what the stand-in answered."""

    method: str
    args: dict[str, Any]
    response: dict[str, Any]
    ok: bool
    transport: str = ""  # how it arrived: "POST json", "POST form" or "GET"

    @property
    def error(self) -> str | None:
        return None if self.ok else self.response.get("error")


@dataclass
class Message:
    """A message in a channel as the stand-in stores it (block_ids filled in, like Slack does)."""

    ts: str
    channel: str
    user: str
    text: str
    blocks: list[dict] = field(default_factory=list)
    thread_ts: str | None = None
    replies: list[Message] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)  # name -> user ids, in order
    edited: int = 0
    ephemeral_to: str | None = None  # user id when only that user sees it
    bot_id: str | None = None

    @property
    def is_ephemeral(self) -> bool:
        return self.ephemeral_to is not None

    def to_api(self, team_id: str) -> dict[str, Any]:
        """The message as Slack returns it from ``conversations.history`` and in payloads."""
        out: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts,
                               "team": team_id}
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if self.blocks:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.replies:
            out["thread_ts"] = self.ts
            out["reply_count"] = len(self.replies)
            out["reply_users"] = sorted({r.user for r in self.replies})
            out["latest_reply"] = self.replies[-1].ts
        if self.reactions:
            out["reactions"] = [{"name": n, "users": list(u), "count": len(u)} for n, u in self.reactions.items()]
        if self.edited:
            out["edited"] = {"user": self.user, "ts": self.ts}
        return out


@dataclass
class OpenView:
    """A modal the stand-in is showing to ``user`` (top of the user's stack = the visible one)."""

    id: str
    user: str | None
    view: dict[str, Any]
    hash: str
    root_view_id: str
    previous_view_id: str | None = None
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # block_id -> action_id -> value object

    def to_api(self, team_id: str, app_id: str, bot_id: str) -> dict[str, Any]:
        out = copy.deepcopy(self.view)
        out.update({"id": self.id, "team_id": team_id, "app_id": app_id, "bot_id": bot_id, "hash": self.hash,
                    "root_view_id": self.root_view_id, "previous_view_id": self.previous_view_id,
                    "state": {"values": copy.deepcopy(self.state)}, "app_installed_team_id": team_id})
        for key, default in (("private_metadata", ""), ("callback_id", ""), ("external_id", ""),
                             ("clear_on_close", False), ("notify_on_close", False)):
            out.setdefault(key, default)
        return out


@dataclass
class _Trigger:
    issued: float
    user: str | None
    used: bool = False


@dataclass
class _ResponseUrl:
    channel: str
    user: str | None
    message_ts: str | None
    issued: float
    uses: int = 0


SENT_TEXT_METHODS = {"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open", "views.update",
                     "views.push", "response_url", "command_response", "view_submission.update",
                     "view_submission.push", "view_submission.errors"}
CONTROL = re.compile(r"<([^<>]*)>")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _allowed(token: str, users: set[str], groups: set[str]) -> bool:
    """Is ``<token>`` one of the control sequences our templates write (see ``stray_mentions``)?"""
    if token.startswith("@"):
        return token[1:].split("|")[0] in users
    if token.startswith("!subteam^"):
        return token[len("!subteam^"):].split("|")[0] in groups
    if token.startswith("!date^"):
        return True
    if token.startswith("#"):
        return bool(re.fullmatch(r"#[CGD][A-Z0-9]+(\|[^|]*)?", token))
    return bool(re.match(r"https?://", token))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


class LocalSlack:
    """The Slack Web API stand-in. See the module docstring; all state is inspectable from tests."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-local-test-token",
        team_id: str = "T0LOCAL01",
        team_domain: str = "migrabot-local",
        bot_user_id: str = "U0BOT0001",
        bot_id: str = "B0BOT0001",
        app_id: str = "A0LOCAL01",
        users: dict[str, str] | None = None,
        channels: dict[str, str] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        trigger_ttl: float = TRIGGER_TTL,
        rate_limits: RateLimits | None = None,
        scopes: set[str] | None = None,
        app_token: str = "xapp-1-local-test-app-token",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        #: Socket Mode: apps.connections.open (with ``app_token``) hands out its ws:// URLs
        self.socket = SocketModeHub(app_id)
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.users: dict[str, str] = dict(users or {})
        self.channels: dict[str, str] = dict(channels or {})
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self.trigger_ttl = trigger_ttl
        self.rate_limits = rate_limits
        #: the bot token's scopes that change what Slack allows (chat:write.public, channels:join)
        self.scopes: set[str] = set(scopes if scopes is not None else {"chat:write.public", "channels:join"})
        self.rate_limited: list[Call] = []  # every 429 answered
        self._buckets: dict[str, _Bucket] = {}
        # public channels given here: the bot and every known user are members
        self.conversations: dict[str, Conversation] = {
            cid: Conversation(cid, "public", name, set(self.users)) for cid, name in self.channels.items()}
        self.calls: list[Call] = []
        self.base_url: str | None = None  # http://127.0.0.1:PORT/api/ once started
        self.root_url: str | None = None  # http://127.0.0.1:PORT/
        self._runner: web.AppRunner | None = None
        self._channel_msgs: dict[str, list[Message]] = {}
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._ephemeral: dict[tuple[str, str], Message] = {}
        self._dms: dict[str, str] = {}  # DM channel id -> user id
        self._views: dict[str, OpenView] = {}
        self._stacks: dict[str | None, list[str]] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._listeners: list[ChangeListener] = []
        self._pending: list[tuple[str, str | None, str]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._ids = itertools.count(1)
        self._last_us = 0
        self._last_activity = 0.0
        self._in_flight = 0
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.join": self._conversations_join,
        }

    # ------------------------------------------------------------------ server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port) and return the Web API base URL for ``AsyncWebClient``."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{token}", self._handle_response_url)
        app.router.add_get("/link/", self.socket.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.root_url = f"http://{host}:{bound_port}/"
        self.base_url = f"{self.root_url}api/"
        self.socket.root_url = self.root_url
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (idempotent). The recorded state stays readable."""
        await self.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ public helpers

    def add_channel(self, channel_id: str, name: str, *, private: bool = False, members: set[str] | None = None,
                    bot_member: bool = True) -> Conversation:
        """A public or private channel with ``members`` (default: every known user)."""
        conv = Conversation(channel_id, "private" if private else "public", name,
                            set(self.users) if members is None else set(members), bot_member)
        self.conversations[channel_id] = conv
        self.channels[channel_id] = name
        return conv

    def add_dm(self, user_id: str) -> str:
        """The DM between ``user_id`` and the app (its Messages tab); returns its id (``D…``)."""
        dm = "D" + user_id[1:]
        self._dms[dm] = user_id
        self.conversations[dm] = Conversation(dm, "im", "", {user_id}, True)
        return dm

    def add_group_dm(self, channel_id: str, members: set[str], *, bot_member: bool = False) -> Conversation:
        """A group DM (``mpim``) between ``members``; the app is in it only when invited."""
        conv = Conversation(channel_id, "mpim", "mpdm-" + "--".join(sorted(members)), set(members), bot_member)
        self.conversations[channel_id] = conv
        return conv

    def channel_name_for_command(self, channel_id: str) -> str:
        """The ``channel_name`` Slack sends with a slash command: ``directmessage`` from a DM and
        ``privategroup`` from a private channel or group DM, not the channel's name
        (https://api.slack.com/interactivity/slash-commands#app_command_handling)."""
        conv = self.conversations.get(channel_id)
        if conv is None:
            return "directmessage" if channel_id.startswith("D") else channel_id
        if conv.kind == "im":
            return "directmessage"
        if conv.kind in ("private", "mpim"):
            return "privategroup"
        return conv.name

    def bot_is_member(self, channel_id: str) -> bool:
        """Events (reactions) reach the app only from conversations it is a member of."""
        conv = self.conversations.get(channel_id)
        return conv is None or conv.bot_member

    def on_change(self, callback: ChangeListener) -> None:
        """Call ``callback(kind, channel, ts_or_view_id)`` after each change; may be sync or async.

        kinds: posted, updated, deleted, ephemeral, reaction, view_opened, view_updated, view_pushed, view_closed
        (channel is None for views).
        """
        self._listeners.append(callback)

    def issue_trigger_id(self, user_id: str | None = None) -> str:
        """A trigger_id valid once, for ``trigger_ttl`` seconds (3 s, like Slack)."""
        trigger = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(8)}"
        self._triggers[trigger] = _Trigger(time.monotonic(), user_id)
        return trigger

    def issue_response_url(self, channel_id: str, user_id: str | None = None, message_ts: str | None = None) -> str:
        """A response_url for a slash command (no ``message_ts``) or an action on message ``message_ts``."""
        if self.root_url is None:
            raise RuntimeError("LocalSlack.start() must run before issuing response_urls")
        token = secrets.token_urlsafe(12)
        self._response_urls[token] = _ResponseUrl(channel_id, user_id, message_ts, time.monotonic())
        return f"{self.root_url}response/{token}"

    def touch(self) -> None:
        """Note activity (the driver calls it when it sends a request), so ``wait_idle`` waits after it."""
        self._last_activity = time.monotonic()

    async def wait_idle(self, quiet: float = 0.2, timeout: float = 10.0) -> bool:
        """Wait until no call arrived (and none is in progress) for ``quiet`` seconds.

        Returns False if the bot was still calling after ``timeout`` seconds, True once it settled.
        """
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if self._in_flight == 0 and now - max(self._last_activity, start) >= quiet:
                return True
            if now - start >= timeout:
                return False
            await asyncio.sleep(min(quiet / 4, 0.05))

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def stray_mentions(self) -> list[str]:
        """Every ``<…>`` control sequence the bot sent that our own templates do not make.

        Allowed: mentions of people and user groups the workspace has (``<@U…>``, ``<!subteam^S…>``),
        dates (``<!date^…>``), channel links (``<#C…>``) and web links (``<https://…|…>``). Anything
        else (``<!here>``, ``<!channel>``, a mention of nobody we know) came from data that was not
        escaped (https://api.slack.com/reference/surfaces/formatting#escaping).
        """
        known = {*self.users, self.bot_user_id}
        stray = []
        for call in self.calls:
            if call.method not in SENT_TEXT_METHODS:
                continue
            for text in _strings(call.args):
                for token in CONTROL.findall(text):
                    if not _allowed(token, known, set(self.usergroups)):
                        stray.append(f"{call.method}: <{token}> in {text[:200]!r}")
        return stray

    def errors(self) -> list[Call]:
        """Every call the stand-in rejected: a passing end-to-end test usually asserts this is empty.

        429s are left out: a client retries them after ``Retry-After`` (they are in ``rate_limited``).
        """
        return [c for c in self.calls if not c.ok and c.error != "ratelimited"]

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages of a channel, oldest first (thread replies are in ``Message.replies``)."""
        return list(self._channel_msgs.get(channel, []))

    def message(self, channel: str, ts: str) -> Message | None:
        """Any message by channel and ts: top-level, thread reply or ephemeral."""
        return self._by_ts.get((channel, ts)) or self._ephemeral.get((channel, ts))

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[Message]:
        return [m for m in self._ephemeral.values()
                if (channel is None or m.channel == channel) and (user is None or m.ephemeral_to == user)]

    def open_views(self, user: str | None) -> list[OpenView]:
        """The user's modal stack, bottom first (the last one is what the user sees)."""
        return [self._views[v] for v in self._stacks.get(user, [])]

    def view(self, view_id: str) -> OpenView | None:
        return self._views.get(view_id)

    def view_payload(self, view_id: str) -> dict[str, Any]:
        """The view as Slack sends it in payloads (id, hash, state...)."""
        return self._views[view_id].to_api(self.team_id, self.app_id, self.bot_id)

    def post_as_user(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> Message:
        """A person's message in a channel (for history/replies and for the console)."""
        channel = self._resolve_channel(channel)
        msg = self._store(channel, user, text, [], thread_ts, bot=False)
        self._fire_pending_sync()
        return msg

    def set_reaction(self, user: str, channel: str, ts: str, name: str, removed: bool = False) -> Message:
        """A person adds/removes a reaction (the driver calls this before sending the event)."""
        msg = self._by_ts.get((channel, ts))
        if msg is None:
            raise LookupError(f"no message {ts} in {channel}")
        users = msg.reactions.setdefault(name, [])
        if removed:
            if user in users:
                users.remove(user)
            if not users:
                del msg.reactions[name]
        elif user not in users:
            users.append(user)
        self._pending.append(("reaction", channel, ts))
        self._fire_pending_sync()
        return msg

    def apply_view_response(self, view_id: str, answer: Any) -> None:
        """Apply the bot's answer to a view_submission, as Slack does (errors keep it open, else close/update)."""
        view = self._views.get(view_id)
        if view is None:
            return
        action = answer.get("response_action") if isinstance(answer, dict) else None
        if action == "errors":
            # Slack shows errors under input blocks only, keyed by block_id (a common bug: keying by action_id)
            inputs = {b.get("block_id") for b in view.view.get("blocks", []) if b.get("type") == "input"}
            errors = answer.get("errors")
            bad = sorted(str(k) for k in errors if k not in inputs) if isinstance(errors, dict) and errors else None
            if bad is None:
                problems = ["response_action errors needs a non-empty errors object"]
            else:
                problems = [f"errors key {k!r} is not the block_id of an input block" for k in bad]
                problems += [f"errors[{k!r}] must be a non-empty string" for k, v in errors.items()
                             if not isinstance(v, str) or not v]
            self._record("view_submission.errors", {"view_id": view_id, **answer},
                         self._error("invalid_arguments", problems) if problems else {"ok": True}, "ack")
            return
        if action in ("update", "push"):
            new = answer.get("view")
            problems = check_view(new) if isinstance(new, dict) else ["response_action needs a view"]
            self._record("view_submission." + action, {"view_id": view_id, **answer},
                         self._error("invalid_arguments", problems) if problems else {"ok": True}, "ack")
            if problems:
                return
            if action == "update":
                view.view = self._with_ids(new, is_view=True)
                view.hash = self._new_hash()
                view.state = {}
                self._pending.append(("view_updated", None, view_id))
            else:
                self._push_view(view.user, new, previous=view_id)
        elif action == "clear":
            for vid in list(self._stacks.get(view.user, [])):
                self.close_view(vid)
        else:
            self.close_view(view_id)
        self._fire_pending_sync()

    def apply_command_response(self, channel: str, user: str, answer: Any) -> None:
        """Show the bot's immediate answer to a slash command (``ack("text")``) as Slack does.

        Ephemeral to ``user`` unless ``response_type`` is ``in_channel``; an empty answer shows nothing.
        """
        if not answer:
            return
        args = dict(answer) if isinstance(answer, dict) else {"text": str(answer)}
        if not any(args.get(k) for k in ("text", "blocks", "attachments")):
            return
        try:
            text, blocks = self._check_content(args)
            self._store(channel, self.bot_user_id, text, blocks, None,
                        ephemeral_to=None if args.get("response_type") == "in_channel" else user)
            response: dict[str, Any] = {"ok": True}
        except SlackApiError as exc:
            self._pending.clear()
            response = {"ok": False, "error": exc.code, **exc.extra}
        self._record("command_response", {"channel": channel, "user": user, **args}, response, "ack")
        self._fire_pending_sync()

    def note_failure(self, method: str, error: str, **args: Any) -> None:
        """Record something Slack would have shown as an error (e.g. an ack later than 3 s) in ``errors()``."""
        self._record(method, args, {"ok": False, "error": error}, "ack")

    def close_view(self, view_id: str) -> None:
        """Remove a view from its user's stack (the user closed it, or a submission closed it)."""
        view = self._views.pop(view_id, None)
        if view is None:
            return
        stack = self._stacks.get(view.user, [])
        if view_id in stack:
            stack.remove(view_id)
        self._pending.append(("view_closed", None, view_id))
        self._fire_pending_sync()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        self._in_flight += 1
        self.touch()
        try:
            method = request.match_info["method"]
            transport = "GET" if request.method == "GET" else (
                "POST json" if request.content_type == "application/json" else "POST form")
            try:
                args = await self._read_args(request)
            except SlackApiError as exc:
                args, response = {}, {"ok": False, "error": exc.code}
            else:
                wait = self._rate_limited(method, args)
                if wait:
                    response = {"ok": False, "error": "ratelimited"}
                    self._record(method, args, response, transport)
                    self.rate_limited.append(self.calls[-1])
                    # Retry-After is whole seconds (https://api.slack.com/docs/rate-limits#headers)
                    return web.json_response(response, status=429,
                                             headers={"Retry-After": str(max(1, math.ceil(wait)))})
                response = self._dispatch(method, request, args)
            self._record(method, args, response, transport)
            await self._fire_pending()
            return web.json_response(response)
        finally:
            self.touch()
            self._in_flight -= 1

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise SlackApiError("invalid_json") from exc
                if not isinstance(body, dict):
                    raise SlackApiError("invalid_json")
                args.update(body)
                args["_json"] = True
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        for key in JSON_FIELDS:
            if isinstance(args.get(key), str) and args[key]:
                try:
                    args[key] = json.loads(args[key])
                except ValueError as exc:
                    raise SlackApiError(f"invalid_{key}_format" if key != "view" else "invalid_arguments") from exc
        return args

    def _rate_limited(self, method: str, args: dict[str, Any]) -> float:
        """Seconds to wait when this call is over a limit, else 0 (and the call counts)."""
        limits = self.rate_limits
        if limits is None:
            return 0.0
        if method == "chat.postMessage":
            try:
                key = "post:" + self._resolve_channel(args.get("channel"))
            except SlackApiError:
                return 0.0  # the call fails anyway, with its own error
            capacity, rate = float(limits.post_burst), limits.post_per_second
        elif method in limits.tiers:
            key = "method:" + method
            per_minute = limits.tiers[method]
            capacity, rate = max(1.0, per_minute / 10), per_minute / 60
        else:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, rate / limits.time_factor)
        return bucket.take()

    def _dispatch(self, method: str, request: web.Request, args: dict[str, Any]) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else args.get("token")
        args.pop("token", None)
        args.pop("_json", None)
        if not token:
            return {"ok": False, "error": "not_authed"}
        if method == "apps.connections.open":
            # an app-level token only (https://api.slack.com/methods/apps.connections.open)
            if token == self.bot_token:
                return {"ok": False, "error": "not_allowed_token_type"}
            if token != self.app_token:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.socket.open_url()}
        if token != self.bot_token:
            return {"ok": False, "error": "not_allowed_token_type" if token == self.app_token else "invalid_auth"}
        handler = self._methods.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        try:
            return {"ok": True, **handler(args)}
        except SlackApiError as exc:
            self._pending.clear()
            return {"ok": False, "error": exc.code, **exc.extra}

    def _record(self, method: str, args: dict[str, Any], response: dict[str, Any], transport: str = "") -> None:
        self.calls.append(Call(method, copy.deepcopy(args), response, bool(response.get("ok")), transport))
        if not response.get("ok"):
            log.info("local slack rejected %s: %s %s", method, response.get("error"),
                     response.get("response_metadata", {}).get("messages", ""))

    async def _fire_pending(self) -> None:
        pending, self._pending = self._pending, []
        for kind, channel, ref in pending:
            for callback in list(self._listeners):
                try:
                    result = callback(kind, channel, ref)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # a broken renderer must not break the fake Slack
                    log.exception("on_change listener failed for %s %s %s", kind, channel, ref)

    def _fire_pending_sync(self) -> None:
        """Fire listeners from sync helpers: sync ones now, async ones as tasks on the running loop."""
        pending, self._pending = self._pending, []
        for kind, channel, ref in pending:
            for callback in list(self._listeners):
                try:
                    result = callback(kind, channel, ref)
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)  # keep a reference until it finishes
                        task.add_done_callback(self._tasks.discard)
                except Exception:
                    log.exception("on_change listener failed for %s %s %s", kind, channel, ref)

    @staticmethod
    def _error(code: str, problems: list[str]) -> dict[str, Any]:
        return {"ok": False, "error": code, "errors": problems,
                "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]}}

    # ------------------------------------------------------------------ state helpers

    def _next_ts(self) -> str:
        us = max(self._last_us + 100, time.time_ns() // 1000)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _new_hash(self) -> str:
        return f"{int(time.time())}.{secrets.token_hex(4)}"

    def _resolve_channel(self, channel: Any, *, id_only: bool = False) -> str:
        """The channel id for ``channel``; a ``#name`` only where Slack takes one (``chat.postMessage``).

        ``chat.update``, ``chat.delete``, ``reactions.*`` and ``conversations.*`` take the channel *id*
        ("Channel containing the message to be updated", https://api.slack.com/methods/chat.update):
        a name is ``channel_not_found``.
        """
        if not isinstance(channel, str) or not channel:
            raise SlackApiError("channel_not_found")
        if channel in self.channels or channel in self._dms or channel in self.conversations:
            return channel
        if id_only:
            raise SlackApiError("channel_not_found")
        name = channel.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        if channel in self.users or channel == self.bot_user_id:  # a user id: the DM with the bot
            return self.add_dm(channel) if "D" + channel[1:] not in self._dms else "D" + channel[1:]
        raise SlackApiError("channel_not_found")

    def _postable(self, channel: str) -> None:
        """Where the bot is not a member: a public channel needs chat:write.public (else
        ``not_in_channel``); a private channel, DM or group DM it was not invited to is
        ``channel_not_found`` (https://api.slack.com/methods/chat.postMessage#errors)."""
        conv = self.conversations.get(channel)
        if conv is None or conv.bot_member:
            return
        if conv.kind == "public":
            if "chat:write.public" not in self.scopes:
                raise SlackApiError("not_in_channel")
            return
        raise SlackApiError("channel_not_found")

    def _find(self, channel: str, ts: Any) -> Message:
        msg = self._by_ts.get((channel, ts)) if isinstance(ts, str) else None
        if msg is None:
            raise SlackApiError("message_not_found")
        return msg

    def _with_ids(self, payload: Any, is_view: bool = False) -> Any:
        """Copy of blocks (or a view) with a block_id on every block, as Slack fills them in."""
        payload = copy.deepcopy(payload)
        blocks = payload.get("blocks") if is_view else payload
        if isinstance(blocks, list):
            taken = {b.get("block_id") for b in blocks if isinstance(b, dict)}
            for block in blocks:
                if isinstance(block, dict) and not block.get("block_id"):
                    while True:
                        bid = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(5))
                        if bid not in taken:
                            break
                    taken.add(bid)
                    block["block_id"] = bid
        return payload

    def _check_content(self, args: dict[str, Any]) -> tuple[str, list[dict]]:
        text, blocks = args.get("text"), args.get("blocks")
        if not text and not blocks and not args.get("attachments"):
            raise SlackApiError("no_text")
        if isinstance(text, str) and len(text) > 40_000:
            raise SlackApiError("msg_too_long")
        if blocks is not None:
            problems = check_message(blocks, text if text else "-")
            if problems:
                raise SlackApiError("invalid_blocks", errors=problems,
                                    response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        return (text if isinstance(text, str) else ""), self._with_ids(blocks or [])

    def _store(self, channel: str, user: str, text: str, blocks: list[dict], thread_ts: Any,
               bot: bool = True, ephemeral_to: str | None = None) -> Message:
        parent = None
        if thread_ts:
            parent = self._by_ts.get((channel, str(thread_ts)))
            if parent is None:
                # Slack would post into a thread nobody can see; failing loudly finds the bug sooner
                raise SlackApiError("thread_not_found")
            if parent.thread_ts and parent.thread_ts != parent.ts:  # a reply's ts: Slack uses its parent
                parent = self._by_ts[(channel, parent.thread_ts)]
        msg = Message(ts=self._next_ts(), channel=channel, user=user, text=text, blocks=blocks,
                      thread_ts=parent.ts if parent else None, ephemeral_to=ephemeral_to,
                      bot_id=self.bot_id if bot else None)
        if ephemeral_to is not None:
            self._ephemeral[(channel, msg.ts)] = msg
            self._pending.append(("ephemeral", channel, msg.ts))
            return msg
        self._by_ts[(channel, msg.ts)] = msg
        if parent is not None:
            parent.replies.append(msg)
        else:
            self._channel_msgs.setdefault(channel, []).append(msg)
        self._pending.append(("posted", channel, msg.ts))
        return msg

    def _user_obj(self, user_id: str) -> dict[str, Any]:
        name = "migrabot" if user_id == self.bot_user_id else self.users[user_id]
        return {"id": user_id, "team_id": self.team_id, "name": name, "real_name": name, "deleted": False,
                "is_bot": user_id == self.bot_user_id, "tz": "UTC",
                "profile": {"display_name": name, "real_name": name}}

    # ------------------------------------------------------------------ methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"https://{self.team_domain}.slack.com/", "team": self.team_domain, "user": "migrabot",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        self._postable(channel)
        text, blocks = self._check_content(args)
        msg = self._store(channel, self.bot_user_id, text, blocks, args.get("thread_ts"))
        return {"channel": channel, "ts": msg.ts, "message": msg.to_api(self.team_id)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        msg = self._find(channel, args.get("ts"))
        if msg.user != self.bot_user_id:
            raise SlackApiError("cant_update_message")
        text, blocks = self._check_content(args)
        if "text" in args:
            msg.text = text
        if "blocks" in args:  # Slack keeps the old blocks when none are sent
            msg.blocks = blocks
        msg.edited += 1
        self._pending.append(("updated", channel, msg.ts))
        return {"channel": channel, "ts": msg.ts, "text": msg.text, "message": msg.to_api(self.team_id)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        conv = self.conversations.get(channel)
        if conv is not None and not conv.bot_member:
            # an app can post ephemerally only where it is a member (a DM it was not invited to,
            # a private channel: channel_not_found): https://api.slack.com/methods/chat.postEphemeral#errors
            raise SlackApiError("channel_not_found" if conv.kind != "public" else "not_in_channel")
        user = args.get("user")
        if user not in self.users:
            raise SlackApiError("user_not_found")
        text, blocks = self._check_content(args)
        msg = self._store(channel, self.bot_user_id, text, blocks, args.get("thread_ts"), ephemeral_to=user)
        return {"message_ts": msg.ts}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        msg = self._find(channel, args.get("ts"))
        if msg.user != self.bot_user_id:
            raise SlackApiError("cant_delete_message")
        self._delete(msg)
        return {"channel": channel, "ts": msg.ts}

    def _delete(self, msg: Message) -> None:
        if msg.is_ephemeral:
            self._ephemeral.pop((msg.channel, msg.ts), None)
        else:
            self._by_ts.pop((msg.channel, msg.ts), None)
            if msg.thread_ts:
                parent = self._by_ts.get((msg.channel, msg.thread_ts))
                if parent is not None and msg in parent.replies:
                    parent.replies.remove(msg)
            elif msg in self._channel_msgs.get(msg.channel, []):
                self._channel_msgs[msg.channel].remove(msg)
        self._pending.append(("deleted", msg.channel, msg.ts))

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        msg = self._find(channel, args.get("message_ts"))
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{msg.ts.replace('.', '')}"
        if msg.thread_ts:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _take_trigger(self, trigger_id: Any) -> _Trigger:
        # a trigger_id works once (exchanged_trigger_id after) and for 3 s (expired_trigger_id):
        # https://api.slack.com/methods/views.open#errors, https://api.slack.com/interactivity/handling#modal_responses
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise SlackApiError("invalid_trigger_id" if not isinstance(trigger_id, str) or trigger_id.count(".") < 2
                                else "expired_trigger_id")
        if trigger.used:
            raise SlackApiError("exchanged_trigger_id")
        if time.monotonic() - trigger.issued > self.trigger_ttl:
            raise SlackApiError("expired_trigger_id")
        return trigger

    def _valid_view(self, view: Any) -> dict[str, Any]:
        problems = check_view(view) if isinstance(view, dict) else ["view is missing"]
        if problems:
            raise SlackApiError("invalid_arguments", errors=problems,
                                response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        return view

    def _push_view(self, user: str | None, view: dict[str, Any], previous: str | None = None) -> OpenView:
        view_id = f"V{next(self._ids):010d}"
        root = self._views[previous].root_view_id if previous in self._views else view_id
        opened = OpenView(view_id, user, self._with_ids(view, is_view=True), self._new_hash(), root, previous)
        self._views[view_id] = opened
        self._stacks.setdefault(user, []).append(view_id)
        self._pending.append(("view_pushed" if previous else "view_opened", None, view_id))
        return opened

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._take_trigger(args.get("trigger_id"))
        view = self._valid_view(args.get("view"))
        trigger.used = True
        opened = self._push_view(trigger.user, view)
        return {"view": opened.to_api(self.team_id, self.app_id, self.bot_id)}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._take_trigger(args.get("trigger_id"))
        view = self._valid_view(args.get("view"))
        stack = self._stacks.get(trigger.user, [])
        if len(stack) >= MAX_VIEW_STACK:
            raise SlackApiError("push_limit_reached")
        trigger.used = True
        opened = self._push_view(trigger.user, view, previous=stack[-1] if stack else None)
        return {"view": opened.to_api(self.team_id, self.app_id, self.bot_id)}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        opened = self._views.get(view_id) if view_id else next(
            (v for v in self._views.values() if external_id and v.view.get("external_id") == external_id), None)
        if opened is None:
            raise SlackApiError("not_found")
        view = self._valid_view(args.get("view"))
        # hash: "a string that represents view state to protect against possible race conditions";
        # a stale one is hash_conflict (https://api.slack.com/methods/views.update#errors)
        if args.get("hash") and args["hash"] != opened.hash:
            raise SlackApiError("hash_conflict")
        opened.view = self._with_ids(view, is_view=True)
        opened.hash = self._new_hash()
        self._pending.append(("view_updated", None, opened.id))
        return {"view": opened.to_api(self.team_id, self.app_id, self.bot_id)}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup")
        if group not in self.usergroups:
            raise SlackApiError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user")
        if user not in self.users and user != self.bot_user_id:
            raise SlackApiError("user_not_found")
        return {"user": self._user_obj(user)}

    def _reaction_target(self, args: dict[str, Any]) -> tuple[Message, str]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        msg = self._find(channel, args.get("timestamp"))
        name = args.get("name")
        if not isinstance(name, str) or not name.strip(":"):
            raise SlackApiError("invalid_name")
        return msg, name.strip(":")

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise SlackApiError("already_reacted")
        users.append(self.bot_user_id)
        self._pending.append(("reaction", msg.channel, msg.ts))
        return {}

    def _reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.get(name, [])
        if self.bot_user_id not in users:
            raise SlackApiError("no_reaction")
        users.remove(self.bot_user_id)
        if not users:
            del msg.reactions[name]
        self._pending.append(("reaction", msg.channel, msg.ts))
        return {}

    @staticmethod
    def _page(items: list[Message], args: dict[str, Any]) -> tuple[list[Message], dict[str, Any]]:
        try:
            limit = max(1, min(int(args.get("limit") or 100), 1000))
            offset = int(args.get("cursor") or 0)
        except ValueError as exc:
            raise SlackApiError("invalid_cursor") from exc
        page = items[offset:offset + limit]
        more = offset + limit < len(items)
        return page, {"has_more": more, "response_metadata": {"next_cursor": str(offset + limit) if more else ""}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        inclusive = _truthy(args.get("inclusive"))
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or 0) or float("inf")

        def keep(m: Message) -> bool:
            ts = float(m.ts)
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        msgs = [m for m in reversed(self._channel_msgs.get(channel, [])) if keep(m)]
        page, meta = self._page(msgs, args)
        return {"messages": [m.to_api(self.team_id) for m in page], **meta}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        ts = args.get("ts")
        msg = self._by_ts.get((channel, ts)) if isinstance(ts, str) else None
        if msg is None:
            raise SlackApiError("thread_not_found")
        if msg.thread_ts:
            msg = self._by_ts[(channel, msg.thread_ts)]
        page, meta = self._page([msg, *msg.replies], args)
        return {"messages": [m.to_api(self.team_id) for m in page], **meta}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        conv = self.conversations.get(channel)
        if conv is None:
            raise SlackApiError("channel_not_found")
        if conv.kind != "public" and not conv.bot_member:
            raise SlackApiError("channel_not_found")  # a private conversation the bot cannot see
        return {"channel": conv.to_api(num_members=_truthy(args.get("include_num_members")))}

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        """Public channels only, with channels:join (https://api.slack.com/methods/conversations.join)."""
        channel = self._resolve_channel(args.get("channel"), id_only=True)
        conv = self.conversations.get(channel)
        if conv is None:
            raise SlackApiError("channel_not_found")
        if conv.kind != "public":
            raise SlackApiError("method_not_supported_for_channel_type")
        if "channels:join" not in self.scopes:
            raise SlackApiError("missing_scope", needed="channels:join")
        extra: dict[str, Any] = {"warning": "already_in_channel"} if conv.bot_member else {}
        conv.bot_member = True
        return {"channel": conv.to_api(), **extra}

    # ------------------------------------------------------------------ response_url

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        self._in_flight += 1
        self.touch()
        try:
            try:
                args = await request.json()
            except ValueError:
                args = None
            status, response = self._respond(request.match_info["token"], args)
            self._record("response_url", {"url": str(request.url), **(args if isinstance(args, dict) else {})},
                         response, "POST json")
            await self._fire_pending()
            return web.json_response(response, status=status)
        finally:
            self.touch()
            self._in_flight -= 1

    def _respond(self, token: str, args: Any) -> tuple[int, dict[str, Any]]:
        url = self._response_urls.get(token)
        if url is None or time.monotonic() - url.issued > RESPONSE_URL_TTL:
            return 404, {"ok": False, "error": "expired_url"}
        if url.uses >= RESPONSE_URL_USES:
            return 404, {"ok": False, "error": "used_url"}
        if not isinstance(args, dict):
            return 400, {"ok": False, "error": "invalid_payload"}
        url.uses += 1
        original = self.message(url.channel, url.message_ts) if url.message_ts else None
        try:
            if _truthy(args.get("delete_original")):
                if original is None:
                    raise SlackApiError("message_not_found")
                self._delete(original)
                return 200, {"ok": True}
            text, blocks = self._check_content(args)
            if _truthy(args.get("replace_original")):
                if original is None:
                    raise SlackApiError("message_not_found")
                original.text, original.blocks = text, blocks
                original.edited += 1
                self._pending.append(("updated", original.channel, original.ts))
            elif args.get("response_type") == "in_channel":
                self._store(url.channel, self.bot_user_id, text, blocks, args.get("thread_ts"))
            else:
                if url.user is None:
                    raise SlackApiError("user_not_found")
                self._store(url.channel, self.bot_user_id, text, blocks, args.get("thread_ts"),
                            ephemeral_to=url.user)
        except SlackApiError as exc:
            self._pending.clear()
            return (404 if exc.code.endswith("not_found") else 400), {"ok": False, "error": exc.code, **exc.extra}
        return 200, {"ok": True}
