"""End to end: a real slack-bolt AsyncApp over real HTTP, driven by SlackDriver, talking to LocalSlack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator.local_slack import LocalSlack
from bot.simulator.slack_requests import FORM, SlackDriver, serve_bolt_app, sign_request

SECRET = "test-signing-secret-0123456789"


def _text(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


PLAN_BLOCKS = [
    _text("*Plan* for `prod`: 2 migrations"),
    {"type": "actions", "block_id": "targets_block", "elements": [
        {"type": "checkboxes", "action_id": "targets", "options": [
            {"text": {"type": "plain_text", "text": "prod"}, "value": "prod"},
            {"text": {"type": "plain_text", "text": "staging"}, "value": "staging"}]},
        {"type": "static_select", "action_id": "pick", "placeholder": {"type": "plain_text", "text": "When"},
         "options": [{"text": {"type": "plain_text", "text": "now"}, "value": "now"},
                     {"text": {"type": "plain_text", "text": "tonight"}, "value": "tonight"}]}]},
    {"type": "actions", "elements": [
        {"type": "button", "action_id": "approve", "value": "run-1", "style": "primary",
         "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "action_id": "open_form", "text": {"type": "plain_text", "text": "Reject…"}}]},
]

FORM_VIEW = {
    "type": "modal", "callback_id": "reject_form", "private_metadata": "run-1",
    "title": {"type": "plain_text", "text": "Reject run"}, "submit": {"type": "plain_text", "text": "Reject"},
    "notify_on_close": True,
    "blocks": [{"type": "input", "block_id": "reason_block", "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "reason", "max_length": 500}},
               {"type": "actions", "elements": [{"type": "button", "action_id": "more", "value": "details",
                                                 "text": {"type": "plain_text", "text": "Show details"}}]}],
}


@dataclass
class Stack:
    slack: LocalSlack
    driver: SlackDriver
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        return [body for k, body in self.seen if k == kind]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    slack = LocalSlack(users={"U1": "alice", "U2": "bob"}, channels={"C1": "deploys"})
    base_url = await slack.start()
    app = AsyncApp(client=AsyncWebClient(token=slack.bot_token, base_url=base_url), signing_secret=SECRET)
    seen: list[tuple[str, dict[str, Any]]] = []

    @app.command("/migrate")
    async def migrate(ack, command, client, respond):  # type: ignore[no-untyped-def]
        if command["text"] == "help":
            await ack("Usage: /migrate plan ENV")
            return
        if command["text"] == "slow":
            await asyncio.sleep(0.2)
        await ack()
        seen.append(("command", command))
        if command["text"] == "private":
            await respond(text="only you", blocks=[_text("only you"), PLAN_BLOCKS[2]])
        else:
            await client.chat_postMessage(channel=command["channel_id"], text="Plan for prod", blocks=PLAN_BLOCKS)

    @app.action("approve")
    async def approve(ack, body, client, respond):  # type: ignore[no-untyped-def]
        await ack()
        seen.append(("approve", body))
        text = f"Approved by <@{body['user']['id']}>"
        if body["container"]["is_ephemeral"]:
            await respond(text=text, replace_original=True)
        else:
            await client.chat_update(channel=body["channel"]["id"], ts=body["container"]["message_ts"], text=text,
                                     blocks=[_text(text)])

    @app.action("open_form")
    async def open_form(ack, body, client):  # type: ignore[no-untyped-def]
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=FORM_VIEW)

    @app.action("more")
    async def more(ack, body, client):  # type: ignore[no-untyped-def]
        await ack()
        seen.append(("more", body))
        view = {**FORM_VIEW, "blocks": [*FORM_VIEW["blocks"][:1], _text("2 migrations, 1 risky")]}
        await client.views_update(view_id=body["view"]["id"], hash=body["view"]["hash"], view=view)

    @app.view_closed("reject_form")
    async def closed(ack, view):  # type: ignore[no-untyped-def]
        await ack()
        seen.append(("closed", view))

    @app.action("targets")
    @app.action("pick")
    async def choose(ack, body):  # type: ignore[no-untyped-def]
        await ack()
        seen.append(("choose", body))

    @app.view("reject_form")
    async def reject(ack, view):  # type: ignore[no-untyped-def]
        seen.append(("submit", view))
        reason = view["state"]["values"]["reason_block"]["reason"]["value"] or ""
        if reason == "wrong key":
            await ack(response_action="errors", errors={"reason": "keyed by action_id: Slack cannot show it"})
        elif len(reason) < 5:
            await ack(response_action="errors", errors={"reason_block": "Say a little more (5+ characters)."})
        else:
            await ack()

    @app.event("reaction_added")
    async def reaction(event, body):  # type: ignore[no-untyped-def]
        seen.append(("reaction", body))

    url, runner = await serve_bolt_app(app)
    driver = SlackDriver(url, SECRET, slack)
    try:
        yield Stack(slack, driver, seen)
    finally:
        await driver.close()
        await runner.cleanup()
        await slack.stop()


def test_signature_matches_slack_sdk_verifier() -> None:
    now = int(time.time())
    headers = sign_request(SECRET, b"command=%2Fmigrate", now)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(b"command=%2Fmigrate", headers["X-Slack-Request-Timestamp"],
                             headers["X-Slack-Signature"])
    assert not verifier.is_valid(b"command=%2Fother", headers["X-Slack-Request-Timestamp"],
                                 headers["X-Slack-Signature"])


async def test_slash_command_posts_message_and_click_updates_it(stack: Stack) -> None:
    status, _ = await stack.driver.slash("U1", "/migrate", "plan prod", "C1")
    assert status == 200
    assert await stack.slack.wait_idle()
    (command,) = stack.bodies("command")
    assert command["user_id"] == "U1" and command["channel_name"] == "deploys" and command["text"] == "plan prod"
    assert command["response_url"].startswith(stack.slack.root_url) and command["trigger_id"]
    assert stack.slack.calls_to("auth.test"), "Bolt authorizes through auth.test on the first request"
    (msg,) = stack.slack.messages("C1")
    assert msg.user == stack.slack.bot_user_id and msg.text == "Plan for prod"
    button_block_id = msg.blocks[2]["block_id"]

    status, _ = await stack.driver.click("U1", "C1", msg.ts, "approve")
    assert status == 200
    assert await stack.slack.wait_idle()
    (body,) = stack.bodies("approve")
    action = body["actions"][0]
    assert action["type"] == "button" and action["value"] == "run-1" and action["text"]["text"] == "Approve"
    assert action["block_id"] == button_block_id, "Slack fills in block_ids the bot left out"
    assert body["container"] == {"type": "message", "message_ts": msg.ts, "channel_id": "C1", "is_ephemeral": False}
    assert body["message"]["ts"] == msg.ts and body["user"]["name"] == "alice"
    assert msg.text == "Approved by <@U1>" and msg.edited == 1 and len(msg.blocks) == 1
    assert stack.slack.errors() == []


async def test_checkbox_and_select_state_is_remembered_per_user(stack: Stack) -> None:
    await stack.driver.slash("U1", "/migrate", "", "C1")
    await stack.slack.wait_idle()
    ts = stack.slack.messages("C1")[0].ts
    await stack.driver.check("U1", "C1", ts, "targets", ["prod", "staging"])
    await stack.driver.select("U1", "C1", ts, "pick", "tonight")
    await stack.slack.wait_idle()
    checked, picked = stack.bodies("choose")
    assert [o["value"] for o in checked["actions"][0]["selected_options"]] == ["prod", "staging"]
    values = picked["state"]["values"]["targets_block"]
    assert [o["value"] for o in values["targets"]["selected_options"]] == ["prod", "staging"]
    assert values["pick"]["selected_option"]["value"] == "tonight"
    assert picked["actions"][0]["selected_option"]["value"] == "tonight"
    with pytest.raises(LookupError, match="available"):
        await stack.driver.check("U1", "C1", ts, "targets", ["dev"])


async def test_click_on_ephemeral_message_replaces_it_through_response_url(stack: Stack) -> None:
    await stack.driver.slash("U2", "/migrate", "private", "C1")
    await stack.slack.wait_idle()
    assert stack.slack.messages("C1") == []
    (eph,) = stack.slack.ephemerals("C1", user="U2")
    await stack.driver.click("U2", "C1", eph.ts, "approve")
    await stack.slack.wait_idle()
    (body,) = stack.bodies("approve")
    assert body["container"]["is_ephemeral"] is True and "message" not in body
    assert eph.text == "Approved by <@U2>" and eph.edited == 1
    assert stack.slack.errors() == []


async def test_modal_submission_with_errors_stays_open(stack: Stack) -> None:
    await stack.driver.slash("U1", "/migrate", "", "C1")
    await stack.slack.wait_idle()
    await stack.driver.click("U1", "C1", stack.slack.messages("C1")[0].ts, "open_form")
    await stack.slack.wait_idle()
    assert stack.slack.errors() == []
    (view,) = stack.slack.open_views("U1")
    assert view.view["callback_id"] == "reject_form"

    status, answer = await stack.driver.submit_view("U1", view.id, {"reason_block": {"reason": "no"}})
    assert status == 200
    assert answer == {"response_action": "errors", "errors": {"reason_block": "Say a little more (5+ characters)."}}
    assert stack.slack.open_views("U1") == [view]
    submitted = stack.bodies("submit")[0]
    assert submitted["id"] == view.id and submitted["private_metadata"] == "run-1"

    assert stack.slack.errors() == []
    await stack.driver.submit_view("U1", view.id, {"reason_block": {"reason": "wrong key"}})
    (bad,) = stack.slack.errors()
    assert bad.method == "view_submission.errors" and "not the block_id of an input block" in bad.response["errors"][0]

    status, answer = await stack.driver.submit_view("U1", view.id, {"reason_block": {"reason": "wrong target db"}})
    assert status == 200 and not answer
    assert stack.slack.open_views("U1") == []


async def test_reaction_event_and_its_retry_both_reach_the_listener(stack: Stack) -> None:
    await stack.driver.slash("U1", "/migrate", "", "C1")
    await stack.slack.wait_idle()
    msg = stack.slack.messages("C1")[0]
    status, _ = await stack.driver.react("U2", "C1", msg.ts, "white_check_mark")
    assert status == 200
    assert msg.reactions == {"white_check_mark": ["U2"]}
    status, _ = await stack.driver.react("U2", "C1", msg.ts, "white_check_mark", retry_num=1)
    assert status == 200
    for _ in range(50):  # events are acked before the listener runs
        if len(stack.bodies("reaction")) == 2:
            break
        await asyncio.sleep(0.02)
    first, retry = stack.bodies("reaction")
    assert first["event_id"] == retry["event_id"], "a retry carries the same event_id (Bolt does not dedupe)"
    assert first["event"]["item"] == {"type": "message", "channel": "C1", "ts": msg.ts}
    assert first["event"]["item_user"] == stack.slack.bot_user_id


async def test_forged_signature_and_stale_timestamp_are_rejected(stack: Stack) -> None:
    body = b"command=%2Fmigrate&text=x&user_id=U1&channel_id=C1&team_id=T0LOCAL01"
    forged = await stack.driver.post(body, FORM, signature="v0=" + "0" * 64)
    stale = await stack.driver.post(body, FORM, timestamp=int(time.time()) - 301)
    assert forged.status == 401 and stale.status == 401
    await asyncio.sleep(0.1)
    assert stack.seen == []
    fresh = await stack.driver.post(body, FORM, timestamp=int(time.time()) - 200)
    assert fresh.status == 200, "the same body signed within 300 s is accepted"


async def test_slash_ack_text_shows_as_ephemeral_and_failures_are_recorded(stack: Stack) -> None:
    status, answer = await stack.driver.slash("U2", "/migrate", "help", "C1")
    assert status == 200 and answer == "Usage: /migrate plan ENV", "Bolt answers ack(text) as plain text"
    assert [m.text for m in stack.slack.ephemerals("C1", "U2")] == ["Usage: /migrate plan ENV"]
    assert stack.slack.messages("C1") == [] and stack.slack.errors() == []

    status, _ = await stack.driver.slash("U2", "/unknown", "", "C1")
    assert status == 404, "Bolt answers 404 when no listener acks"
    stack.driver.ack_timeout = 0.1
    await stack.driver.slash("U2", "/migrate", "slow", "C1")
    assert [(c.method, c.error) for c in stack.slack.errors()] == [
        ("ack.slash", "dispatch_failed"), ("ack.slash", "operation_timeout")]


async def test_click_in_modal_updates_it_and_closing_notifies(stack: Stack) -> None:
    await stack.driver.slash("U1", "/migrate", "", "C1")
    await stack.slack.wait_idle()
    await stack.driver.click("U1", "C1", stack.slack.messages("C1")[0].ts, "open_form")
    await stack.slack.wait_idle()
    (view,) = stack.slack.open_views("U1")
    status, _ = await stack.driver.click_in_view("U1", view.id, "more")
    assert status == 200
    await stack.slack.wait_idle()
    (body,) = stack.bodies("more")
    assert body["container"] == {"type": "view", "view_id": view.id} and body["actions"][0]["value"] == "details"
    assert body["view"]["state"]["values"] == {"reason_block": {"reason": {"type": "plain_text_input", "value": None}}}
    assert [b["type"] for b in view.view["blocks"]] == ["input", "section"], "the bot's views.update applied"
    with pytest.raises(LookupError, match="not open"):
        await stack.driver.click_in_view("U2", view.id, "more")

    status, _ = await stack.driver.close_view("U1", view.id)
    await stack.slack.wait_idle()
    assert status == 200 and stack.slack.open_views("U1") == []
    assert stack.bodies("closed")[0]["id"] == view.id and stack.slack.errors() == []
