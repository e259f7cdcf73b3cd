"""Signed requests to the bot, built the way Slack builds them: a driver that acts like people in Slack.

The end-to-end tests and ``migrabot console`` use :class:`SlackDriver` to send slash commands, button
clicks, checkbox/select changes, modal submissions and reaction events to the bot over real HTTP, signed
with the app's signing secret exactly as Slack signs them. Payloads are built from what the stand-in
(:class:`bot.simulator.local_slack.LocalSlack`) stores, so a click only works on a button the bot really posted::

    driver = SlackDriver("http://127.0.0.1:3000/slack/events", signing_secret, slack)
    status, body = await driver.slash("U1", "/migrate", "status prod", "C1")
    await slack.wait_idle()
    msg = slack.messages("C1")[-1]
    await driver.click("U1", "C1", msg.ts, "approve")
    await driver.close()

Every method takes ``retry_num``: the same request (same body, event_id, trigger_id) is sent again with
``X-Slack-Retry-Num``/``X-Slack-Retry-Reason``, as Slack does when it saw no ack within 3 s.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.simulator.local_slack import LocalSlack, Message

FORM = "application/x-www-form-urlencoded"
#: the Socket Mode envelope type of each kind of request (https://api.slack.com/apis/connections/socket)
SOCKET_TYPES = {"slash": "slash_commands", "event": "events_api"}
ACK_TIMEOUT = 3.0  # Slack gives up on an answer after 3 s and shows the user an error
JSON = "application/json"
INPUT_TYPES = {"checkboxes", "static_select", "radio_buttons", "multi_static_select", "plain_text_input",
               "number_input", "email_text_input", "url_text_input", "datepicker", "timepicker",
               "users_select", "conversations_select", "channels_select"}


def sign_request(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Slack's v0 signature headers for ``body`` sent at ``timestamp`` (unix seconds).

    >>> sign_request("secret", b"a=1", 1700000000)["X-Slack-Signature"][:9]
    'v0=05eea7'
    """
    # slack_sdk's own signer: the same code Slack's SDKs verify with, not a second implementation
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=str(timestamp), body=body)
    if signature is None:  # slack_sdk answers None only for a missing timestamp or body
        raise ValueError("cannot sign a request without its timestamp and body")
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


class Answer(NamedTuple):
    """The bot's HTTP answer: status and body (parsed JSON, text, or None when empty)."""

    status: int
    body: Any


@dataclass
class SentRequest:
    """A request as sent, kept so it can be replayed as a Slack retry."""

    body: bytes
    content_type: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    envelope: Any = None  # the Socket Mode envelope it went in, when sent over Socket Mode


class SlackDriver:
    """Acts like people in Slack against the bot at ``bot_url`` (the app's ``/slack/events`` URL)."""

    def __init__(self, bot_url: str | None, signing_secret: str, slack: LocalSlack, team_id: str | None = None,
                 api_app_id: str | None = None, timeout: float = 10.0, *, socket_mode: bool = False) -> None:
        """``socket_mode``: deliver everything as Socket Mode envelopes to the app connected to
        ``slack.socket`` (no ``bot_url``, no signing), the way Slack does for a Socket Mode app."""
        self.bot_url = bot_url
        self.socket_mode = socket_mode
        self.signing_secret = signing_secret
        self.slack = slack
        self.team_id = team_id or slack.team_id
        self.api_app_id = api_app_id or slack.app_id
        self.timeout = timeout
        self.ack_timeout = ACK_TIMEOUT  # tests may lower it to check slow acks without waiting 3 s
        self.last_request: SentRequest | None = None
        self._last_by_kind: dict[str, SentRequest] = {}
        # (user, channel-or-view, ts-or-view_id) -> block_id -> action_id -> value object: what the user selected
        self._selections: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self._event_ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SlackDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ low level

    async def post(self, body: bytes, content_type: str, timestamp: int | None = None,
                   signature: str | None = None, headers: dict[str, str] | None = None) -> Answer:
        """POST ``body`` to the bot, signed now (or at ``timestamp``; ``signature`` overrides, for forgeries)."""
        if self.bot_url is None:
            raise RuntimeError("this driver has no bot_url: it sends over Socket Mode")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        sent = sign_request(self.signing_secret, body, int(time.time()) if timestamp is None else timestamp)
        if signature is not None:
            sent["X-Slack-Signature"] = signature
        sent["Content-Type"] = content_type
        sent.update(headers or {})
        self.slack.touch()
        try:
            async with self._session.post(self.bot_url, data=body, headers=sent) as resp:
                raw = await resp.read()
                status = resp.status
        finally:
            self.slack.touch()
        if not raw:
            return Answer(status, None)
        try:
            return Answer(status, json.loads(raw))
        except ValueError:
            return Answer(status, raw.decode(errors="replace"))

    async def replay(self, request: SentRequest, retry_num: int = 1, retry_reason: str = "http_timeout") -> Answer:
        """Send ``request`` again as Slack's retry number ``retry_num`` (same body, fresh signature;
        over Socket Mode: the same envelope again, ``retry_attempt`` + 1)."""
        if request.envelope is not None:
            envelope = await self.slack.socket.deliver(request.envelope.type, request.payload,
                                                       retry_of=request.envelope, retry_reason="timeout")
            request.envelope = envelope
            return self._socket_answer(envelope)
        if self.bot_url is None:
            raise RuntimeError("this driver has no bot_url: it sends over Socket Mode")
        return await self.post(request.body, request.content_type,
                               headers={"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason})

    async def _send(self, kind: str, payload: dict[str, Any], retry_num: int | None) -> Answer:
        if kind == "slash":
            body, ctype = urlencode(payload).encode(), FORM
        elif kind == "event":
            body, ctype = json.dumps(payload).encode(), JSON
        else:
            body, ctype = urlencode({"payload": json.dumps(payload)}).encode(), FORM
        request = SentRequest(body, ctype, kind, payload)
        self.last_request = self._last_by_kind[kind] = request
        started = time.monotonic()
        if self.socket_mode:
            self.slack.touch()
            envelope = await self.slack.socket.deliver(SOCKET_TYPES.get(kind, "interactive"), payload)
            self.slack.touch()
            request.envelope = envelope
            answer = self._socket_answer(envelope)
        elif retry_num is None:
            answer = await self.post(body, ctype)
        else:
            answer = await self.replay(request, retry_num)
        elapsed = time.monotonic() - started
        if elapsed > self.ack_timeout:
            self.slack.note_failure(f"ack.{kind}", "operation_timeout", seconds=round(elapsed, 2))
        elif answer.status != 200 and kind != "event":
            # Slack shows "failed with the error dispatch_failed" (commands) or a red error (actions, modals)
            self.slack.note_failure(f"ack.{kind}", "dispatch_failed", status=answer.status)
        return answer

    @staticmethod
    def _socket_answer(envelope: Any) -> Answer:
        """An envelope's ack as an answer: its payload is the ack's body (none: Slack timed out)."""
        return Answer(200 if envelope.acked else 504, envelope.ack_payload)

    def _retry(self, kind: str, retry_num: int | None) -> SentRequest | None:
        """The earlier request of this kind to resend, when ``retry_num`` asks for a retry."""
        if retry_num is None:
            return None
        return self._last_by_kind.get(kind)

    # ------------------------------------------------------------------ people's actions

    def _user(self, user_id: str) -> dict[str, Any]:
        name = self.slack.users.get(user_id, user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _channel_name(self, channel_id: str) -> str:
        # Slack sends directmessage / privategroup, not a name, from DMs and private channels
        return self.slack.channel_name_for_command(channel_id)

    async def slash(self, user_id: str, command: str, text: str, channel_id: str,
                    retry_num: int | None = None) -> Answer:
        """``user_id`` types ``command text`` in ``channel_id`` (every field Slack sends)."""
        again = self._retry("slash", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        payload = {
            "token": "legacy-verification-token", "team_id": self.team_id, "team_domain": self.slack.team_domain,
            "enterprise_id": "", "channel_id": channel_id, "channel_name": self._channel_name(channel_id),
            "user_id": user_id, "user_name": self.slack.users.get(user_id, user_id), "command": command,
            "text": text, "api_app_id": self.api_app_id, "is_enterprise_install": "false",
            "response_url": self.slack.issue_response_url(channel_id, user_id),
            "trigger_id": self.slack.issue_trigger_id(user_id),
        }
        answer = await self._send("slash", payload, retry_num)
        if answer.status == 200:
            self.slack.apply_command_response(channel_id, user_id, answer.body)
        return answer

    def _stored(self, channel_id: str, message_ts: str) -> Message:
        msg = self.slack.message(channel_id, message_ts)
        if msg is None:
            raise LookupError(f"no message {message_ts} in {channel_id} (ephemerals included)")
        return msg

    @staticmethod
    def _elements(blocks: list[dict]) -> list[tuple[str, dict]]:
        """(block_id, element) for every interactive element of the blocks."""
        found = []
        for block in blocks:
            if block.get("type") == "actions":
                found += [(block["block_id"], e) for e in block.get("elements", [])]
            elif block.get("type") == "section" and isinstance(block.get("accessory"), dict):
                found.append((block["block_id"], block["accessory"]))
            elif block.get("type") == "input" and isinstance(block.get("element"), dict):
                found.append((block["block_id"], block["element"]))
        return found

    def _element(self, blocks: list[dict], action_id: str, value: str | None = None,
                 type_: str | None = None) -> tuple[str, dict]:
        elements = self._elements(blocks)
        for block_id, element in elements:
            if element.get("action_id") != action_id or (type_ and element.get("type") != type_):
                continue
            if value is None or type_ != "button" or element.get("value") == value:
                return block_id, element
        have = sorted({f"{e.get('action_id')}={e.get('value')}" if e.get("type") == "button" else
                       str(e.get("action_id")) for _, e in elements})
        want = action_id if value is None else f"{action_id}={value}"
        raise LookupError(f"no {type_ or 'element'} {want!r} here; available: {', '.join(have) or 'none'}")

    @staticmethod
    def _initial(element: dict) -> dict[str, Any]:
        """The value object Slack reports for an element the user has not touched."""
        kind = element["type"]
        if kind in ("checkboxes", "multi_static_select"):
            return {"type": kind, "selected_options": copy.deepcopy(element.get("initial_options", []))}
        if kind in ("static_select", "radio_buttons"):
            return {"type": kind, "selected_option": copy.deepcopy(element.get("initial_option"))}
        if kind in ("users_select", "conversations_select", "channels_select"):
            key = {"users_select": "user", "conversations_select": "conversation", "channels_select": "channel"}[kind]
            return {"type": kind, f"selected_{key}": element.get(f"initial_{key}")}
        if kind == "datepicker":
            return {"type": kind, "selected_date": element.get("initial_date")}
        if kind == "timepicker":
            return {"type": kind, "selected_time": element.get("initial_time")}
        return {"type": kind, "value": element.get("initial_value")}

    def _state(self, key: tuple[str, str, str], blocks: list[dict]) -> dict[str, dict[str, Any]]:
        chosen = self._selections.get(key, {})
        values: dict[str, dict[str, Any]] = {}
        for block_id, element in self._elements(blocks):
            if element.get("type") in INPUT_TYPES and element.get("action_id"):
                action_id = element["action_id"]
                current = chosen.get(block_id, {}).get(action_id) or self._initial(element)
                values.setdefault(block_id, {})[action_id] = copy.deepcopy(current)
        return values

    def _options(self, element: dict) -> list[dict]:
        opts = list(element.get("options") or [])
        for group in element.get("option_groups") or []:
            opts += group.get("options", [])
        return opts

    def _pick(self, element: dict, values: list[str]) -> list[dict]:
        by_value = {o.get("value"): o for o in self._options(element)}
        missing = [v for v in values if v not in by_value]
        if missing:
            raise LookupError(f"options {missing} are not in {element.get('action_id')!r}; "
                              f"available: {sorted(map(str, by_value))}")
        return [copy.deepcopy(by_value[v]) for v in values]

    def _message_payload(self, user_id: str, channel_id: str, msg: Message, action: dict[str, Any],
                         key: tuple[str, str, str]) -> dict[str, Any]:
        container: dict[str, Any] = {"type": "message", "message_ts": msg.ts, "channel_id": channel_id,
                                     "is_ephemeral": msg.is_ephemeral}
        if msg.thread_ts:
            container["thread_ts"] = msg.thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions", "user": self._user(user_id), "api_app_id": self.api_app_id,
            "token": "legacy-verification-token", "container": container,
            "trigger_id": self.slack.issue_trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.slack.team_domain},
            "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "state": {"values": self._state(key, msg.blocks)},
            "response_url": self.slack.issue_response_url(channel_id, user_id, msg.ts),
            "actions": [action],
        }
        if not msg.is_ephemeral:  # Slack sends no message body for ephemeral messages
            payload["message"] = msg.to_api(self.team_id)
        return payload

    def _action(self, block_id: str, element: dict, **extra: Any) -> dict[str, Any]:
        action = {"type": element["type"], "action_id": element.get("action_id"), "block_id": block_id,
                  "action_ts": f"{time.time():.6f}", **extra}
        if element["type"] == "button":
            action["text"] = copy.deepcopy(element.get("text"))
            if "value" in element:
                action["value"] = element["value"]
            if "style" in element:
                action["style"] = element["style"]
        return action

    async def click(self, user_id: str, channel_id: str, message_ts: str, action_id: str,
                    value: str | None = None, retry_num: int | None = None) -> Answer:
        """``user_id`` clicks the button ``action_id`` (the one with ``value`` when several share the id)."""
        again = self._retry("block_actions", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        msg = self._stored(channel_id, message_ts)
        block_id, element = self._element(msg.blocks, action_id, value, "button")
        key = (user_id, channel_id, message_ts)
        payload = self._message_payload(user_id, channel_id, msg, self._action(block_id, element), key)
        return await self._send("block_actions", payload, retry_num)

    async def check(self, user_id: str, channel_id: str, message_ts: str, action_id: str,
                    selected_values: list[str], retry_num: int | None = None, *,
                    seen: Message | None = None) -> Answer:
        """``user_id`` sets checkboxes ``action_id`` so exactly ``selected_values`` are ticked.

        Slack sends the clicker's whole selection as their client showed it, and ``message`` as
        that client last saw it: ``seen`` (a copy of an earlier version) is what an out-of-date
        client showed; by default the message as the stand-in holds it now.
        """
        again = self._retry("block_actions", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        msg = seen or self._stored(channel_id, message_ts)
        block_id, element = self._element(msg.blocks, action_id, type_="checkboxes")
        selected = self._pick(element, selected_values)
        key = (user_id, channel_id, message_ts)
        self._selections.setdefault(key, {}).setdefault(block_id, {})[action_id] = {
            "type": "checkboxes", "selected_options": selected}
        action = self._action(block_id, element, selected_options=copy.deepcopy(selected))
        return await self._send("block_actions", self._message_payload(user_id, channel_id, msg, action, key),
                                retry_num)

    async def toggle(self, user_id: str, channel_id: str, message_ts: str, action_id: str, value: str,
                     checked: bool = True, *, seen: Message | None = None) -> Answer:
        """``user_id`` clicks one checkbox: their selection is what their client showed (``seen``,
        default the current message) with that one box changed, as Slack sends it."""
        msg = seen or self._stored(channel_id, message_ts)
        _, element = self._element(msg.blocks, action_id, type_="checkboxes")
        shown = [o["value"] for o in element.get("initial_options") or []]
        values = [v for v in shown if v != value] + ([value] if checked else [])
        return await self.check(user_id, channel_id, message_ts, action_id, values, seen=msg)

    def snapshot(self, channel_id: str, message_ts: str) -> Message:
        """A copy of the message as it is now: what a client that stops updating keeps showing."""
        return copy.deepcopy(self._stored(channel_id, message_ts))

    async def select(self, user_id: str, channel_id: str, message_ts: str, action_id: str, value: str,
                     retry_num: int | None = None) -> Answer:
        """``user_id`` picks option ``value`` in the static select ``action_id``."""
        again = self._retry("block_actions", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        msg = self._stored(channel_id, message_ts)
        block_id, element = self._element(msg.blocks, action_id, type_="static_select")
        (option,) = self._pick(element, [value])
        key = (user_id, channel_id, message_ts)
        self._selections.setdefault(key, {}).setdefault(block_id, {})[action_id] = {
            "type": "static_select", "selected_option": option}
        action = self._action(block_id, element, selected_option=copy.deepcopy(option))
        return await self._send("block_actions", self._message_payload(user_id, channel_id, msg, action, key),
                                retry_num)

    def _open_view(self, user_id: str, view_id: str) -> dict[str, Any]:
        view = self.slack.view(view_id)
        if view is None or view.user not in (user_id, None):
            raise LookupError(f"view {view_id} is not open for {user_id}")
        return self.slack.view_payload(view_id)

    async def click_in_view(self, user_id: str, view_id: str, action_id: str, value: str | None = None,
                            retry_num: int | None = None) -> Answer:
        """``user_id`` clicks the button ``action_id`` inside the open modal ``view_id``."""
        again = self._retry("block_actions", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        view = self._open_view(user_id, view_id)
        block_id, element = self._element(view["blocks"], action_id, value, "button")
        view["state"] = {"values": self._state((user_id, "view", view_id), view["blocks"])}
        payload = {
            "type": "block_actions", "user": self._user(user_id), "api_app_id": self.api_app_id,
            "token": "legacy-verification-token", "container": {"type": "view", "view_id": view_id},
            "trigger_id": self.slack.issue_trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.slack.team_domain},
            "enterprise": None, "is_enterprise_install": False, "view": view,
            "actions": [self._action(block_id, element)],
        }
        return await self._send("block_actions", payload, retry_num)

    async def submit_view(self, user_id: str, view_id: str, values: dict[str, dict[str, Any]],
                          retry_num: int | None = None) -> Answer:
        """``user_id`` fills the modal (``values[block_id][action_id] = text``) and presses submit.

        A value may also be a full value object (e.g. ``{"type": "static_select", "selected_option": ...}``).
        The stand-in then applies the bot's answer: ``response_action: errors`` keeps the modal open,
        ``update``/``push``/``clear`` act as in Slack, anything else closes it.
        """
        again = self._retry("view_submission", retry_num)
        if again is not None:
            answer = await self.replay(again, retry_num or 1)
            self.slack.apply_view_response(again.payload["view"]["id"], answer.body)
            return answer
        view = self._open_view(user_id, view_id)
        state = self._state((user_id, "view", view_id), view["blocks"])
        for block_id, actions in values.items():
            for action_id, value in actions.items():
                if action_id not in state.get(block_id, {}):
                    raise LookupError(f"the modal has no input {block_id}.{action_id}; "
                                      f"it has {[f'{b}.{a}' for b, acts in state.items() for a in acts]}")
                if isinstance(value, dict):
                    state[block_id][action_id] = copy.deepcopy(value)
                else:
                    state[block_id][action_id] = {"type": state[block_id][action_id]["type"], "value": value}
        view["state"] = {"values": state}
        team = {"id": self.team_id, "domain": self.slack.team_domain}
        payload: dict[str, Any] = {"type": "view_submission", "team": team,
                   "user": self._user(user_id), "api_app_id": self.api_app_id, "token": "legacy-verification-token",
                   "trigger_id": self.slack.issue_trigger_id(user_id), "view": view, "response_urls": [],
                   "enterprise": None, "is_enterprise_install": False}
        answer = await self._send("view_submission", payload, retry_num)
        if answer.status == 200:
            self.slack.apply_view_response(view_id, answer.body)
        return answer

    async def close_view(self, user_id: str, view_id: str, retry_num: int | None = None) -> Answer | None:
        """``user_id`` closes the modal. Slack tells the bot (view_closed) only if the view set
        ``notify_on_close``; otherwise nothing is sent and None is returned."""
        again = self._retry("view_closed", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        view = self._open_view(user_id, view_id)
        self.slack.close_view(view_id)
        if not view.get("notify_on_close"):
            return None
        payload = {"type": "view_closed", "team": {"id": self.team_id, "domain": self.slack.team_domain},
                   "user": self._user(user_id), "api_app_id": self.api_app_id, "token": "legacy-verification-token",
                   "view": view, "is_cleared": False, "enterprise": None, "is_enterprise_install": False}
        return await self._send("view_closed", payload, retry_num)

    async def react(self, user_id: str, channel_id: str, message_ts: str, reaction: str, removed: bool = False,
                    retry_num: int | None = None) -> Answer | None:
        """``user_id`` adds (or removes) ``:reaction:`` on a message: Slack state first, then the event.

        Slack sends the event only when the app is a member of the conversation; otherwise the
        reaction is shown and nothing reaches the bot (None is returned).
        """
        again = self._retry("event", retry_num)
        if again is not None:
            return await self.replay(again, retry_num or 1)
        msg = self.slack.set_reaction(user_id, channel_id, message_ts, reaction.strip(":"), removed)
        if not self.slack.bot_is_member(channel_id):
            # https://api.slack.com/events/reaction_added: sent for messages in conversations the app is in
            return None
        payload = self.reaction_event(user_id, channel_id, message_ts, reaction, removed, msg)
        return await self._send("event", payload, retry_num)

    def reaction_event(self, user_id: str, channel_id: str, message_ts: str, reaction: str, removed: bool,
                       msg: Message) -> dict[str, Any]:
        """The Events API body of a reaction, as Slack sends it."""
        now = time.time()
        payload = {
            "token": "legacy-verification-token", "team_id": self.team_id, "api_app_id": self.api_app_id,
            "type": "event_callback", "event_id": f"Ev{next(self._event_ids):04d}{secrets.token_hex(4).upper()}",
            "event_time": int(now), "event_context": secrets.token_hex(8),
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.slack.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event": {"type": "reaction_removed" if removed else "reaction_added", "user": user_id,
                      "reaction": reaction.strip(":"), "item": {"type": "message", "channel": channel_id,
                                                                 "ts": message_ts},
                      "item_user": msg.user, "event_ts": f"{now:.6f}"},
        }
        return payload


async def serve_bolt_app(app: Any, host: str = "127.0.0.1", port: int = 0,
                         path: str = "/slack/events") -> tuple[str, web.AppRunner]:
    """Serve a slack-bolt ``AsyncApp`` over real HTTP on a free port; return (events URL, runner).

    Stop it with ``await runner.cleanup()``. Bolt's own ``app.start()`` blocks and needs a fixed port,
    which makes parallel tests flaky (bolt-python #157)::

        url, runner = await serve_bolt_app(app)
        driver = SlackDriver(url, signing_secret, slack)
    """
    runner = web.AppRunner(app.web_app(path=path), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return f"http://{host}:{runner.addresses[0][1]}{path}", runner
