"""The Slack Web API stand-in: real answer shapes, real rejections, recorded calls and channel state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator.local_slack import LocalSlack, RateLimits
from bot.slack_out import CountedRateLimitRetries, with_retries


def section(text: str = "hi") -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def modal(title: str = "Run migration") -> dict[str, Any]:
    return {"type": "modal", "callback_id": "run", "title": {"type": "plain_text", "text": title},
            "blocks": [section()]}


@pytest.fixture
async def slack() -> AsyncIterator[LocalSlack]:
    fake = LocalSlack(users={"U1": "alice", "U2": "bob"}, channels={"C1": "deploys", "C2": "ops"},
                      usergroups={"S1": ["U1", "U2"]})
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def client(slack: LocalSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        await call
    assert info.value.response.status_code == 200, "Slack answers errors with HTTP 200"
    return info.value.response["error"]


async def test_answers_have_the_real_shapes(slack: LocalSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert auth["user_id"] == slack.bot_user_id and auth["team_id"] == slack.team_id and auth["bot_id"]

    posted = await client.chat_postMessage(channel="C1", text="plan", blocks=[section("plan")])
    assert set(posted.data) == {"ok", "channel", "ts", "message"}
    assert posted["channel"] == "C1" and posted["message"]["ts"] == posted["ts"]
    assert posted["message"]["blocks"][0]["block_id"], "Slack fills in missing block_ids"

    updated = await client.chat_update(channel="C1", ts=posted["ts"], text="done")
    assert set(updated.data) == {"ok", "channel", "ts", "text", "message"}
    assert updated["text"] == "done" and updated["message"]["blocks"] == posted["message"]["blocks"]

    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert set(eph.data) == {"ok", "message_ts"}

    opened = await client.views_open(trigger_id=slack.issue_trigger_id("U1"), view=modal())
    assert opened["view"]["id"].startswith("V") and opened["view"]["hash"]
    assert opened["view"]["state"] == {"values": {}} and opened["view"]["callback_id"] == "run"

    link = await client.chat_getPermalink(channel="C1", message_ts=posted["ts"])
    assert link["permalink"].endswith(f"/archives/C1/p{posted['ts'].replace('.', '')}")
    assert (await client.usergroups_users_list(usergroup="S1"))["users"] == ["U1", "U2"]
    assert (await client.users_info(user="U2"))["user"]["name"] == "bob"
    assert (await client.conversations_info(channel="C2"))["channel"]["name"] == "ops"

    msg = slack.messages("C1")[0]
    assert (msg.text, msg.edited, msg.user) == ("done", 1, slack.bot_user_id)
    assert [e.text for e in slack.ephemerals(user="U1")] == ["only you"]
    assert [c.method for c in slack.calls][:3] == ["auth.test", "chat.postMessage", "chat.update"]
    assert slack.errors() == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_rejections(slack: LocalSlack, client: AsyncWebClient) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url)
    assert await error_of(bad.chat_postMessage(channel="C1", text="x")) == "invalid_auth"
    async with aiohttp.ClientSession() as session, session.post(
            f"{slack.base_url}chat.postMessage", json={"channel": "C1", "text": "x"}) as resp:
        assert resp.status == 200 and (await resp.json())["error"] == "not_authed"

    assert await error_of(client.chat_postMessage(channel="C404", text="x")) == "channel_not_found"
    assert await error_of(client.chat_postMessage(channel="C1")) == "no_text"
    assert await error_of(client.chat_postMessage(channel="C1", text="x" * 40_001)) == "msg_too_long"
    assert await error_of(client.chat_postMessage(channel="C1", text="x", blocks=[section()] * 51)) == "invalid_blocks"
    assert await error_of(client.chat_update(channel="C1", ts="1.000100", text="x")) == "message_not_found"
    assert await error_of(client.chat_postEphemeral(channel="C1", user="U404", text="x")) == "user_not_found"
    assert await error_of(client.views_update(view_id="V404", view=modal())) == "not_found"
    assert await error_of(client.users_info(user="U404")) == "user_not_found"
    assert await error_of(client.usergroups_users_list(usergroup="S404")) == "no_such_subteam"

    invalid = slack.calls_to("chat.postMessage")[-1]
    assert invalid.error == "invalid_blocks" and "message has 51 blocks (max 50)" in invalid.response["errors"]
    assert invalid.response["response_metadata"]["messages"] == ["[ERROR] message has 51 blocks (max 50)"]
    assert len(slack.errors()) == 11 and slack.messages("C1") == []


async def test_person_messages_cannot_be_edited_by_the_bot(slack: LocalSlack, client: AsyncWebClient) -> None:
    person = slack.post_as_user("U1", "C1", "please migrate")
    assert await error_of(client.chat_update(channel="C1", ts=person.ts, text="x")) == "cant_update_message"
    assert await error_of(client.chat_delete(channel="C1", ts=person.ts)) == "cant_delete_message"


async def test_trigger_ids_are_single_use_and_short_lived(slack: LocalSlack, client: AsyncWebClient) -> None:
    assert await error_of(client.views_open(trigger_id="123.456.made-up", view=modal())) == "expired_trigger_id"

    trigger = slack.issue_trigger_id("U1")
    assert await error_of(client.views_open(trigger_id=trigger, view=modal("t" * 25))) == "invalid_arguments"
    assert "view.title.text is 25 chars (max 24)" in slack.errors()[-1].response["errors"]
    view = (await client.views_open(trigger_id=trigger, view=modal()))["view"]
    assert await error_of(client.views_open(trigger_id=trigger, view=modal())) == "exchanged_trigger_id"

    slack.trigger_ttl = 0.05
    stale = slack.issue_trigger_id("U1")
    await asyncio.sleep(0.1)
    assert await error_of(client.views_open(trigger_id=stale, view=modal())) == "expired_trigger_id"

    updated = await client.views_update(view_id=view["id"], view=modal("Running…"), hash=view["hash"])
    assert updated["view"]["title"]["text"] == "Running…" and updated["view"]["hash"] != view["hash"]
    assert await error_of(client.views_update(view_id=view["id"], view=modal(), hash=view["hash"])) == "hash_conflict"
    assert [v.view["title"]["text"] for v in slack.open_views("U1")] == ["Running…"]


async def test_threads_reactions_history_and_form_or_get_calls(slack: LocalSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="#deploys", text="run 1")
    assert parent["channel"] == "C1", "a channel name resolves to its id"
    reply = await client.chat_postMessage(channel="C1", text="step 1", thread_ts=parent["ts"])
    await client.chat_postMessage(channel="C1", text="step 2", thread_ts=reply["ts"])  # reply ts -> same thread
    second = await client.chat_postMessage(channel="C1", text="run 2")
    assert float(second["ts"]) > float(reply["ts"]) > float(parent["ts"])

    # reactions.add goes as form fields, history/replies as GET with a query, like slack_sdk sends them
    await client.reactions_add(channel="C1", timestamp=parent["ts"], name="rocket")
    again = client.reactions_add(channel="C1", timestamp=parent["ts"], name="rocket")
    assert await error_of(again) == "already_reacted"
    history = await client.conversations_history(channel="C1", limit=1)
    assert [m["text"] for m in history["messages"]] == ["run 2"] and history["has_more"]
    history = await client.conversations_history(channel="C1", cursor=history["response_metadata"]["next_cursor"])
    (first,) = history["messages"]
    assert first["reply_count"] == 2 and first["reactions"] == [{"name": "rocket", "users": [slack.bot_user_id],
                                                                 "count": 1}]
    replies = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["run 1", "step 1", "step 2"]
    await client.reactions_remove(channel="C1", timestamp=parent["ts"], name="rocket")
    assert slack.messages("C1")[0].reactions == {}
    transports = {c.method: c.transport for c in slack.calls if c.ok}
    assert transports["chat.postMessage"] == "POST json" and transports["reactions.add"] == "POST form"
    assert transports["conversations.history"] == transports["conversations.replies"] == "GET"


async def test_form_posts_with_token_and_json_blocks_are_accepted(slack: LocalSlack) -> None:
    form = {"token": slack.bot_token, "channel": "C2", "text": "x", "blocks": '[{"type": "divider"}]'}
    async with aiohttp.ClientSession() as session, session.post(f"{slack.base_url}chat.postMessage",
                                                                data=form) as resp:
        answer = await resp.json()
    assert answer["ok"] and answer["message"]["blocks"][0]["type"] == "divider"
    assert slack.calls[-1].transport == "POST form" and "token" not in slack.calls[-1].args


async def test_response_urls_follow_slack_rules(slack: LocalSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="plan", blocks=[section("plan")])
    async with aiohttp.ClientSession() as session:
        async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(url, json=body) as resp:
                return resp.status, await resp.json()

        command_url = slack.issue_response_url("C1", "U1")
        assert await post(command_url, {"text": "working…"}) == (200, {"ok": True})
        assert [m.text for m in slack.ephemerals("C1", "U1")] == ["working…"], "ephemeral is the default"
        await post(command_url, {"text": "for everyone", "response_type": "in_channel"})
        assert [m.text for m in slack.messages("C1")] == ["plan", "for everyone"]
        status, answer = await post(command_url, {"text": "x", "blocks": [section("x" * 3001)]})
        assert status == 400 and answer["error"] == "invalid_blocks"

        action_url = slack.issue_response_url("C1", "U1", posted["ts"])
        await post(action_url, {"text": "approved", "replace_original": True})
        assert slack.messages("C1")[0].text == "approved" and slack.messages("C1")[0].edited == 1
        await post(action_url, {"delete_original": True})
        assert [m.text for m in slack.messages("C1")] == ["for everyone"]

        for _ in range(2):
            await post(command_url, {"text": "again"})
        assert await post(command_url, {"text": "sixth"}) == (404, {"ok": False, "error": "used_url"})
        assert (await post(f"{slack.root_url}response/nope", {"text": "x"}))[0] == 404
    assert [c.ok for c in slack.calls_to("response_url")].count(False) == 3


async def test_change_listener_and_wait_idle(slack: LocalSlack, client: AsyncWebClient) -> None:
    seen: list[tuple[str, str | None, str]] = []

    async def remember(kind: str, channel: str | None, ref: str) -> None:
        seen.append((kind, channel, ref))

    slack.on_change(remember)
    slack.on_change(lambda *args: 1 / 0)  # a broken listener must not break the fake
    posted = await client.chat_postMessage(channel="C1", text="a")
    await client.chat_update(channel="C1", ts=posted["ts"], text="b")
    eph = await client.chat_postEphemeral(channel="C1", user="U2", text="c")
    view = (await client.views_open(trigger_id=slack.issue_trigger_id("U2"), view=modal()))["view"]
    assert seen == [("posted", "C1", posted["ts"]), ("updated", "C1", posted["ts"]),
                    ("ephemeral", "C1", eph["message_ts"]), ("view_opened", None, view["id"])]

    async def chatty() -> None:
        for i in range(5):
            await client.chat_postMessage(channel="C2", text=str(i))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(chatty())
    assert await slack.wait_idle(quiet=0.2, timeout=5)
    assert task.done() and len(slack.messages("C2")) == 5, "wait_idle returns only once the calls stopped"

    async def busy() -> None:
        for i in range(15):
            await client.chat_postMessage(channel="C2", text=f"busy {i}")
            await asyncio.sleep(0.02)

    task = asyncio.create_task(busy())
    assert await slack.wait_idle(quiet=0.2, timeout=0.2) is False, "a bot still calling is not idle"
    await task


async def test_ts_values_are_unique_and_increasing(slack: LocalSlack, client: AsyncWebClient) -> None:
    results = await asyncio.gather(*(client.chat_postMessage(channel="C1", text=str(i)) for i in range(20)))
    stamps = [r["ts"] for r in results]
    assert len(set(stamps)) == 20
    ordered = [m.ts for m in slack.messages("C1")]
    assert ordered == sorted(ordered, key=float) and all(len(ts.split(".")[1]) == 6 for ts in ordered)


# --- stricter, as real Slack is (issue 13) ----------------------------------------------------------------


async def test_chat_update_and_reactions_need_the_channel_id(slack: LocalSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="#deploys", text="by name")
    assert posted["channel"] == "C1", "chat.postMessage takes a name and answers with the id"
    ts = posted["ts"]
    assert await error_of(client.chat_update(channel="#deploys", ts=ts, text="x")) == "channel_not_found"
    assert await error_of(client.chat_update(channel="deploys", ts=ts, text="x")) == "channel_not_found"
    assert await error_of(client.reactions_add(channel="#deploys", timestamp=ts, name="eyes")) == "channel_not_found"
    assert (await client.chat_update(channel="C1", ts=ts, text="by id"))["text"] == "by id"


async def test_where_the_bot_is_not_a_member(slack: LocalSlack, client: AsyncWebClient) -> None:
    slack.add_channel("G1", "secrets", private=True, bot_member=False)
    slack.add_channel("C9", "release", bot_member=False)
    slack.add_group_dm("G2", {"U1", "U2"})
    assert await error_of(client.chat_postMessage(channel="G1", text="x")) == "channel_not_found"
    assert await error_of(client.chat_postMessage(channel="G2", text="x")) == "channel_not_found"
    assert await error_of(client.chat_postEphemeral(channel="G1", user="U1", text="x")) == "channel_not_found"
    assert await error_of(client.conversations_info(channel="G1")) == "channel_not_found"
    # a public channel: chat:write.public lets the bot post; without it, not_in_channel
    assert (await client.chat_postMessage(channel="C9", text="public"))["ok"]
    slack.scopes.discard("chat:write.public")
    assert await error_of(client.chat_postMessage(channel="C9", text="x")) == "not_in_channel"
    info = (await client.conversations_info(channel="C9", include_num_members=True))["channel"]
    assert info["is_member"] is False and info["num_members"] == 2 and info["name"] == "release"
    joined = await client.conversations_join(channel="C9")
    assert joined["channel"]["is_member"] is True and slack.conversations["C9"].bot_member
    assert (await client.chat_postMessage(channel="C9", text="member now"))["ok"]
    assert await error_of(client.conversations_join(channel="G1")) == "method_not_supported_for_channel_type"
    dm = slack.add_dm("U1")
    info = (await client.conversations_info(channel=dm))["channel"]
    assert info["is_im"] is True and info["user"] == "U1"
    assert slack.channel_name_for_command(dm) == "directmessage"
    assert slack.channel_name_for_command("G1") == "privategroup"
    assert slack.channel_name_for_command("C9") == "release"


async def test_rate_limits_answer_429_with_retry_after() -> None:
    async with LocalSlack(users={"U1": "alice"}, channels={"C1": "deploys", "C2": "ops"},
                          rate_limits=RateLimits(post_burst=3, post_per_second=1.0)) as slack:
        async with aiohttp.ClientSession() as http:
            async def post(channel: str) -> tuple[int, str | None, dict[str, Any]]:
                async with http.post(f"{slack.base_url}chat.postMessage", json={"channel": channel, "text": "x"},
                                     headers={"Authorization": f"Bearer {slack.bot_token}"}) as r:
                    return r.status, r.headers.get("Retry-After"), await r.json()

            answers = [await post("C1") for _ in range(4)]
            assert [a[0] for a in answers] == [200, 200, 200, 429], "a burst of 3, then about 1 per second"
            assert answers[3][1] == "1" and answers[3][2] == {"ok": False, "error": "ratelimited"}
            assert (await post("C2"))[0] == 200, "the limit is per channel"
            assert len(slack.rate_limited) == 1 and slack.errors() == []
            await asyncio.sleep(1.05)
            assert (await post("C1"))[0] == 200


async def test_the_sdk_client_with_the_bots_retry_handlers_waits_out_a_429() -> None:
    async with LocalSlack(users={"U1": "alice"}, channels={"C1": "deploys"},
                          rate_limits=RateLimits(post_burst=1, post_per_second=1.0)) as slack:
        client = with_retries(AsyncWebClient(token=slack.bot_token, base_url=slack.base_url))
        for text in ("one", "two"):
            await client.chat_postMessage(channel="C1", text=text)
        assert [m.text for m in slack.messages("C1")] == ["one", "two"], "none lost"
        (counter,) = [h for h in client.retry_handlers if isinstance(h, CountedRateLimitRetries)]
        assert counter.seen == 1 and counter.waited >= 1.0
        if client.session is not None:
            await client.session.close()
