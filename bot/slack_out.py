"""Everything the bot sends to Slack goes through here: redacted, timed out, errors logged.

A Slack API error never breaks a run: the run's state lives in SQLite and the next
update re-renders the whole message from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.redact import redact, redact_obj

log = logging.getLogger(__name__)
SLACK_TIMEOUT = 10.0
GROUP_CACHE_SECONDS = 300.0
# what a Slack call can raise besides an API error: none of it may break a run
SLACK_TROUBLE = (SlackClientError, aiohttp.ClientError, TimeoutError, OSError, ValueError)


class SlackOut:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._groups: dict[str, tuple[float, set[str]]] = {}

    def _session(self) -> None:
        """One HTTP session for every call: slack_sdk opens a new one per request otherwise."""
        if self.client.session is None or self.client.session.closed:
            self.client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT))

    async def close(self) -> None:
        if self.client.session is not None and not self.client.session.closed:
            await self.client.session.close()

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        kwargs = redact_obj(kwargs)
        self._session()
        try:
            response = await asyncio.wait_for(
                self.client.api_call(method, json=kwargs), timeout=SLACK_TIMEOUT)
            return dict(response.data) if isinstance(response.data, dict) else None
        except SlackApiError as exc:
            log.error("Slack %s failed: %s", method, redact(exc.response.get("error", exc)))
        except SLACK_TROUBLE as exc:
            log.error("Slack %s failed: %s", method, redact(repr(exc)))
        return None

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, *,
                   thread_ts: str | None = None, broadcast: bool = False) -> str | None:
        """Post a message; returns its ts, or None when Slack refused it."""
        args: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
            if broadcast:
                args["reply_broadcast"] = True
        data = await self._call("chat.postMessage", **args)
        return data.get("ts") if data else None

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> bool:
        return await self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks) is not None

    async def ephemeral(self, channel: str, user: str, text: str,
                        blocks: list[dict[str, Any]] | None = None) -> bool:
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        return await self._call("chat.postEphemeral", **args) is not None

    async def respond(self, response_url: str, text: str, blocks: list[dict[str, Any]] | None = None) -> bool:
        """An ephemeral answer through the request's ``response_url``: works where the bot is not a member."""
        self._session()
        body: dict[str, Any] = redact_obj({"response_type": "ephemeral", "replace_original": False, "text": text})
        if blocks is not None:
            body["blocks"] = redact_obj(blocks)
        try:
            async with self.client.session.post(response_url, json=body,  # type: ignore[union-attr]
                                                timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT)) as r:
                if r.status == 200:
                    return True
                log.error("response_url answered HTTP %s", r.status)
        except SLACK_TROUBLE as exc:
            log.error("response_url failed: %s", redact(repr(exc)))
        return False

    async def open_modal(self, trigger_id: str, view: dict[str, Any]) -> str | None:
        data = await self._call("views.open", trigger_id=trigger_id, view=view)
        return data["view"]["id"] if data else None

    async def update_modal(self, view_id: str, view: dict[str, Any]) -> bool:
        return await self._call("views.update", view_id=view_id, view=view) is not None

    async def permalink(self, channel: str, ts: str) -> str | None:
        self._session()
        try:
            response = await asyncio.wait_for(
                self.client.chat_getPermalink(channel=channel, message_ts=ts), timeout=SLACK_TIMEOUT)
            return response.get("permalink")
        except (SlackApiError, *SLACK_TROUBLE):
            return None

    async def group_members(self, group_id: str) -> set[str]:
        """Members of a user group (``usergroups.users.list``), cached for five minutes."""
        cached = self._groups.get(group_id)
        if cached and time.monotonic() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        self._session()
        try:
            response = await asyncio.wait_for(
                self.client.usergroups_users_list(usergroup=group_id), timeout=SLACK_TIMEOUT)
            members = set(response.get("users") or [])
        except (SlackApiError, *SLACK_TROUBLE) as exc:
            log.error("cannot read user group %s: %s", group_id, redact(exc))
            return cached[1] if cached else set()
        self._groups[group_id] = (time.monotonic(), members)
        return members
