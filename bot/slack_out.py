"""Everything the bot sends to Slack goes through here: redacted, paced, retried, errors logged.

A Slack API error never breaks a run: the run's state lives in SQLite and the next
update re-renders the whole message from it. Messages to one channel are paced (Slack allows
about one per second per channel, short bursts tolerated) and a 429 is retried after the
``Retry-After`` Slack asked for (slack_sdk's rate-limit retry handler), so no thread reply the run's
record depends on is dropped; the retries are counted per channel so the thread can say so.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.redact import redact, redact_obj

log = logging.getLogger(__name__)
SLACK_TIMEOUT = 10.0  # one attempt
CALL_TIMEOUT = 120.0  # one call with its retries after 429s (Slack's Retry-After is usually a few seconds)
RATE_LIMIT_RETRIES = 10
# https://api.slack.com/docs/rate-limits: "Posting messages: 1 per second. Short bursts >1 allowed."
POST_RATE = 1.0  # messages per second per channel
POST_BURST = 3
# the 429s the current call saw, and the seconds they cost (set by SlackOut._call, read by the handler)
_CALL_RETRIES: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("call_retries", default=None)


class CountedRateLimitRetries(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's retry after a 429 (it waits the ``Retry-After`` seconds Slack sent), counted.

    The wait itself is slack_sdk's; this only counts, so a run's thread can say Slack delayed it.
    """

    def __init__(self, max_retry_count: int = RATE_LIMIT_RETRIES) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.seen = 0
        self.waited = 0.0

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        started = time.monotonic()
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response,
                                                     error=error)
        waited = time.monotonic() - started
        self.seen += 1
        self.waited += waited
        current = _CALL_RETRIES.get()
        if current is not None:
            current[0] += 1
            current[1] += waited
        log.info("Slack answered 429 to %s; retried after %.1f s", request.url.rsplit("/", 1)[-1], waited)


def with_retries(client: AsyncWebClient) -> AsyncWebClient:
    """``client`` retrying connection errors and 429s (slack_sdk's async handlers).

    slack_sdk's async client retries only connection errors by default; a 429 would be an error.
    """
    handlers: list[AsyncRetryHandler] = [AsyncConnectionErrorRetryHandler(max_retry_count=2),
                                         CountedRateLimitRetries()]
    client.retry_handlers = handlers
    return client


@dataclass
class Posted:
    """What ``chat.postMessage`` answered: the channel *id* (even when posted by name) and ts, or the error."""

    channel: str | None = None
    ts: str | None = None
    error: str | None = None
GROUP_CACHE_SECONDS = 300.0
# what a Slack call can raise besides an API error: none of it may break a run
SLACK_TROUBLE = (SlackClientError, aiohttp.ClientError, TimeoutError, OSError, ValueError)


class SlackOut:
    def __init__(self, client: AsyncWebClient, *, post_rate: float = POST_RATE, post_burst: int = POST_BURST) -> None:
        self.client = client
        self.post_rate = post_rate  # 0 = no pacing (the 429 retries still apply)
        self.post_burst = post_burst
        self._groups: dict[str, tuple[float, set[str]]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, when)
        self._pacers: dict[str, asyncio.Lock] = {}
        #: channel -> [429s seen and retried, seconds waited], for the notes in run threads
        self.delays: dict[str, list[float]] = {}
        self.last_error: str | None = None

    async def _pace(self, channel: str) -> None:
        """Wait for the channel's turn: a token bucket of ``post_burst`` refilled at ``post_rate``/s."""
        if self.post_rate <= 0:
            return
        lock = self._pacers.setdefault(channel, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            tokens, then = self._buckets.get(channel, (float(self.post_burst), now))
            tokens = min(float(self.post_burst), tokens + (now - then) * self.post_rate)
            if tokens < 1:
                await asyncio.sleep((1 - tokens) / self.post_rate)
                now, tokens = time.monotonic(), 1.0
            self._buckets[channel] = (tokens - 1, now)

    def delayed(self, channel: str) -> tuple[int, float]:
        """(429s seen and retried, seconds waited) for calls about ``channel`` so far."""
        count, waited = self.delays.get(channel, [0, 0.0])
        return int(count), waited

    def _session(self) -> None:
        """One HTTP session for every call: slack_sdk opens a new one per request otherwise."""
        if self.client.session is None or self.client.session.closed:
            self.client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT))

    async def close(self) -> None:
        if self.client.session is not None and not self.client.session.closed:
            await self.client.session.close()

    async def _call(self, method: str, *, query: bool = False, **kwargs: Any) -> dict[str, Any] | None:
        """The call's answer, or None (then ``last_error`` says why; set before the next await).

        ``query``: a read method, sent as GET with query parameters (Slack takes JSON bodies only
        for write methods).
        """
        kwargs = redact_obj(kwargs)
        self._session()
        retries = [0.0, 0.0]
        token = _CALL_RETRIES.set(retries)
        try:
            call = (self.client.api_call(method, http_verb="GET", params=kwargs) if query
                    else self.client.api_call(method, json=kwargs))
            response = await asyncio.wait_for(call, timeout=CALL_TIMEOUT)
            self.last_error = None
            return dict(response.data) if isinstance(response.data, dict) else None
        except SlackApiError as exc:
            self.last_error = str(exc.response.get("error") or exc)
            log.error("Slack %s failed: %s", method, redact(self.last_error))
        except SLACK_TROUBLE as exc:
            self.last_error = type(exc).__name__
            log.error("Slack %s failed: %s", method, redact(repr(exc)))
        finally:
            _CALL_RETRIES.reset(token)
            if retries[0] and isinstance(kwargs.get("channel"), str):
                total = self.delays.setdefault(kwargs["channel"], [0, 0.0])
                total[0] += retries[0]
                total[1] += retries[1]
        return None

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, *,
                   thread_ts: str | None = None, broadcast: bool = False) -> str | None:
        """Post a message; returns its ts, or None when Slack refused it."""
        return (await self.post_message(channel, text, blocks, thread_ts=thread_ts, broadcast=broadcast)).ts

    async def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, *,
                           thread_ts: str | None = None, broadcast: bool = False) -> Posted:
        """Post a message (paced per channel); the channel id Slack answered with, the ts, or the error."""
        args: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
            if broadcast:
                args["reply_broadcast"] = True
        await self._pace(channel)
        data = await self._call("chat.postMessage", **args)
        if not data:
            return Posted(error=self.last_error or "unknown_error")
        return Posted(channel=data.get("channel") or channel, ts=data.get("ts"))

    async def conversation(self, channel: str) -> dict[str, Any] | None:
        """``conversations.info``: what the conversation is (is_im, is_mpim, is_private, is_member,
        name, num_members); None when the bot cannot see it (``last_error`` says why)."""
        data = await self._call("conversations.info", query=True, channel=channel, include_num_members="true")
        return dict(data.get("channel") or {}) if data else None

    async def join(self, channel: str) -> bool:
        """``conversations.join`` (scope channels:join): public channels only."""
        return await self._call("conversations.join", channel=channel) is not None

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
