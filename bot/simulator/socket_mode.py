"""Slack's Socket Mode, served locally: the WebSocket end of :class:`bot.simulator.local_slack.LocalSlack`.

Slack's protocol (https://api.slack.com/apis/connections/socket), as this hub speaks it:

* the app calls ``apps.connections.open`` with its app-level token (``xapp-…``) and gets a
  ``ws://…/link/?ticket=…&app_id=…`` URL, valid for one connection;
* on connecting, the app receives ``{"type": "hello", "num_connections", "debug_info", "connection_info"}``;
* each request is an envelope ``{"envelope_id", "type": "slash_commands" | "interactive" | "events_api",
  "payload", "accepts_response_payload", "retry_attempt", "retry_reason"}`` sent to one connection;
  the app acknowledges with ``{"envelope_id": …}`` (and, where accepted, ``"payload"``: the ack's body)
  within 3 seconds, else Slack sends the envelope again (``retry_attempt`` + 1);
* ``{"type": "disconnect", "reason": "refresh_requested"}`` asks the app to open a new URL; the old
  connection is closed once the new one is there.

    hub = slack.socket                       # LocalSlack(app_token="xapp-…") has one
    ack = await hub.deliver("slash_commands", {...the command's fields...})
    await hub.refresh()                      # disconnect(refresh_requested); the app reconnects
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

ACK_TIMEOUT = 3.0  # seconds Slack waits for an envelope's ack before sending it again
TICKET_TTL = 30.0


class NoConnection(Exception):
    """No app is connected over Socket Mode (it did not call apps.connections.open, or it left)."""


@dataclass
class Envelope:
    """One envelope as sent, and what the app answered."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int = 0
    retry_reason: str = ""
    acked: bool = False
    ack_payload: Any = None
    ack_seconds: float | None = None

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"envelope_id": self.envelope_id, "type": self.type, "payload": self.payload,
                                   "accepts_response_payload": self.type != "events_api"}
        if self.type == "events_api":  # retry fields come with events (https://api.slack.com/apis/connections/socket)
            message.update(retry_attempt=self.retry_attempt, retry_reason=self.retry_reason)
        return message


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    id: str
    opened: float = field(default_factory=time.monotonic)


class SocketModeHub:
    """The Socket Mode side of the stand-in; see the module docstring."""

    def __init__(self, app_id: str, *, ack_timeout: float = ACK_TIMEOUT) -> None:
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self.root_url: str | None = None  # set by LocalSlack.start()
        self.envelopes: list[Envelope] = []
        self.connections: list[_Connection] = []
        self.hellos = 0  # connections greeted so far (a reconnect is a second hello)
        self.late_acks: list[Envelope] = []
        self._tickets: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._connected = asyncio.Event()
        self._greeted = asyncio.Event()  # set at each hello

    # --- apps.connections.open ------------------------------------------------------------------

    def open_url(self) -> str:
        """A fresh URL for one connection (what ``apps.connections.open`` answers)."""
        if self.root_url is None:
            raise RuntimeError("LocalSlack.start() must run before apps.connections.open")
        ticket = secrets.token_hex(8)
        self._tickets[ticket] = time.monotonic()
        return f"{self.root_url.replace('http://', 'ws://')}link/?ticket={ticket}&app_id={self.app_id}"

    # --- the WebSocket endpoint -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        issued = self._tickets.pop(ticket, None)
        if issued is None or time.monotonic() - issued > TICKET_TTL:
            return web.Response(status=401, text="invalid or used ticket: call apps.connections.open again")
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's pings with pongs
        await ws.prepare(request)
        conn = _Connection(ws, uuid.uuid4().hex[:8])
        self.connections.append(conn)
        self.hellos += 1
        await ws.send_json({"type": "hello", "num_connections": len(self.connections),
                            "debug_info": {"host": "local-slack", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": self.app_id}})
        self._connected.set()
        self._greeted.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if conn in self.connections:
                self.connections.remove(conn)
            if not self.connections:
                self._connected.clear()
        return ws

    def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("socket mode: not JSON from the app: %.100s", data)
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        waiter = self._waiting.get(envelope_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        late = next((e for e in self.envelopes if e.envelope_id == envelope_id), None)
        if late is not None:
            self.late_acks.append(late)

    # --- what tests and the driver do -----------------------------------------------------------------

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def deliver(self, type_: str, payload: dict[str, Any], *, retry_of: Envelope | None = None,
                      retry_reason: str = "timeout") -> Envelope:
        """Send ``payload`` in an envelope to one connection and wait for its ack (up to ``ack_timeout``).

        ``retry_of``: send that envelope again, as Slack does when no ack came in time (same
        envelope_id and payload, ``retry_attempt`` + 1).
        """
        if not self.connections:
            await self.wait_connected()
        if retry_of is not None:
            envelope = Envelope(retry_of.envelope_id, retry_of.type, retry_of.payload,
                                retry_of.retry_attempt + 1, retry_reason)
        else:
            envelope = Envelope(str(uuid.uuid4()), type_, payload)
        self.envelopes.append(envelope)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[envelope.envelope_id] = waiter
        started = time.monotonic()
        try:
            conn = self.connections[-1]  # each envelope goes to one connection: the newest
            await conn.ws.send_json(envelope.to_message())
            ack = await asyncio.wait_for(waiter, self.ack_timeout)
        except TimeoutError:
            return envelope  # not acked: Slack would show an error and retry (events)
        finally:
            self._waiting.pop(envelope.envelope_id, None)
        envelope.acked = True
        envelope.ack_seconds = time.monotonic() - started
        envelope.ack_payload = ack.get("payload")
        return envelope

    async def refresh(self, reason: str = "refresh_requested", grace: float = 10.0) -> None:
        """Ask the connected app to reconnect; close the old connection once a new one opened
        (or after ``grace`` seconds), as Slack does before it retires a connection."""
        old = list(self.connections)
        self._greeted.clear()
        for conn in old:
            await conn.ws.send_json({"type": "disconnect", "reason": reason,
                                     "debug_info": {"host": "local-slack"}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._greeted.wait(), grace)
        for conn in old:
            if not conn.ws.closed:
                await conn.ws.close()

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close()
