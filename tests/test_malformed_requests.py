"""The HTTP endpoint answers every malformed request with a 4xx and no traceback (issue 12, part 3).

Signed like Slack would sign them, so it is the shape that is wrong, not the signature.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from bot.simulator.slack_requests import FORM, sign_request
from tests.botstack import SECRET


def form(**fields: Any) -> bytes:
    return urlencode(fields).encode()


def payload(data: Any) -> bytes:
    return form(payload=json.dumps(data))


VIEW = {"id": "V1", "type": "modal", "callback_id": "confirm_run", "state": {"values": {}}}
CASES = {
    "payload is not JSON": (payload("x")[:-3] + b"%7B", 400),
    "payload is a JSON list": (payload([1, 2]), 400),
    "payload without a type": (payload({"user": {"id": "U0ALICE"}}), 400),
    "block_actions without user": (payload({"type": "block_actions", "actions": [{"action_id": "run"}]}), 400),
    "block_actions without actions": (payload({"type": "block_actions", "user": {"id": "U0ALICE"}}), 400),
    "block_actions with a user that is not an object": (
        payload({"type": "block_actions", "user": "U0ALICE", "actions": [{"action_id": "run"}]}), 400),
    "view_submission without view": (payload({"type": "view_submission", "user": {"id": "U0ALICE"}}), 400),
    "view_submission whose view has no callback_id": (
        payload({"type": "view_submission", "user": {"id": "U0ALICE"}, "view": {"id": "V1", "type": "modal"}}), 400),
    "view_closed without view": (payload({"type": "view_closed", "user": {"id": "U0ALICE"}}), 400),
    "slash command without user and channel": (form(command="/migrate", text="staging"), 400),
}


async def post(url: str, body: bytes, *, stamp: str | None = None, content_type: str = FORM) -> tuple[int, str]:
    headers = sign_request(SECRET, body, int(time.time()))
    if stamp is not None:
        headers["X-Slack-Request-Timestamp"] = stamp
    async with aiohttp.ClientSession() as http, http.post(url, data=body,
                                                          headers={**headers, "Content-Type": content_type}) as r:
        return r.status, await r.text()


async def test_malformed_requests_get_4xx_and_no_traceback(make_stack: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with make_stack() as s:
        for name, (body, status) in CASES.items():
            got, text = await post(s.url, body)
            assert got == status, (name, got, text)
            assert json.loads(text)["error"], name
        got, _ = await post(s.url, form(command="/migrate"), stamp="not-a-number")
        assert got == 401
        got, _ = await post(s.url, b"[1, 2]", content_type="application/json")
        assert got == 400
        # a well-formed confirmation whose metadata does not parse: the modal stays open with a sentence
        broken = {**VIEW, "private_metadata": "{not json"}
        got, text = await post(s.url, payload({"type": "view_submission", "user": {"id": "U0ALICE"}, "view": broken,
                                               "team": {"id": "T1"}, "api_app_id": "A1"}))
        assert got == 200 and "this confirmation is broken" in text
        await s.settle()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()], \
        [r.getMessage() for r in caplog.records if r.exc_info]
