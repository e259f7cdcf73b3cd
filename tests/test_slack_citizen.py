"""A good citizen of a real Slack workspace (issue 13), end to end over signed HTTP against the stricter
stand-in: escaped text from data, merged checklist ticks, channels of every kind, the environment's
channel, block ids, and rate limits with no message lost.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.config import Config, check_config_text
from bot.render.run_message import render_run
from bot.simulator.local_slack import LocalSlack, Message
from state import runs, ticks
from tests import pgserver
from tests.botstack import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    BotStack,
    StackFactory,
    applied,
    bot_stack,
    wait_for,
    write_migrations,
)

OTHER = "C0OTHERCH"  # a public channel besides #deploys
PRIVATE = "G0SECRETS"  # a private channel the bot was not invited to


def config_for(tmp: Path, staging_url: str, prod_url: str, *, staging_channel: str | None) -> Config:
    """staging (channel as given, or none) and prod, both on real databases."""
    channel = f'channel = "{staging_channel}"\n' if staging_channel else ""
    text = f"""
[state]
path = "{tmp / 'state.sqlite3'}"

[environments.staging]
database_url = "{staging_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
lock_timeout = "300ms"
{channel}
[environments.prod]
database_url = "{prod_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
requires = ["staging"]
approvers = ["{BOB}"]
required_approvals = 1
lock_timeout = "300ms"
"""
    config, problems, _ = check_config_text(text, environ={}, base_dir=tmp)
    assert config is not None, problems
    return config


Factory = Callable[..., AbstractAsyncContextManager[BotStack]]


@pytest.fixture
def stack_with(tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str) -> Factory:
    """``stack_with(staging_channel=None, migrations=None, **bot_stack_options)``: the bot, staging and prod."""
    def factory(*, staging_channel: str | None = None, migrations: dict[str, str] | None = None,
                **options: Any) -> AbstractAsyncContextManager[BotStack]:
        write_migrations(tmp_path / "migrations", migrations)
        config = config_for(tmp_path, pg_server.url_for(database), pg_server.url_for(prod_database),
                            staging_channel=staging_channel)
        return bot_stack(config, **options)

    return factory


def texts(s: BotStack, msg: Message) -> str:
    current = s.slack.message(msg.channel, msg.ts) or msg
    return s.text_of(current) + "\n" + "\n".join(r.text + json.dumps(r.blocks) for r in current.replies)


def run_messages(slack: LocalSlack, channel: str) -> list[Message]:
    return [slack.message(channel, m.ts) or m for m in slack.messages(channel)
            if m.blocks and m.blocks[0].get("type") == "header"]


# --- 1. text from data is escaped ---------------------------------------------------------------------

DATA_SQL = """\
-- <!channel> please review, <@U0DATA01> too
CREATE TABLE "scores" ("id" INT, "v" INT);
SELECT 1 WHERE 3 < 10 AND 10 > 2 AND 'a&b' <> 'c';
"""


async def test_sql_from_a_migration_is_escaped_and_in_a_code_block(make_stack: StackFactory) -> None:
    async with make_stack({"20240101000000_scores": DATA_SQL}) as s:
        await s.slash(ALICE, "staging")
        (reply,) = s.last_run_message().replies
        sql_block = reply.blocks[1]["text"]["text"]
        assert sql_block.startswith("```") and sql_block.endswith("```")
        # what the reviewer reads is what will run: Slack shows &lt; as <
        assert "WHERE 3 &lt; 10 AND 10 &gt; 2 AND 'a&amp;b' &lt;&gt; 'c'" in sql_block
        assert "&lt;!channel&gt;" in sql_block and "&lt;@U0DATA01&gt;" in sql_block
        assert "<!channel>" not in json.dumps([c.args for c in s.slack.calls])
        assert s.slack.stray_mentions() == []


async def test_db_report_and_blockers_escape_running_queries(make_stack: StackFactory) -> None:
    async with make_stack(long_query_threshold='"200ms"') as s:
        url = s.config.environment("prod").database_url
        busy, holder, waiter = [await asyncpg.connect(url) for _ in range(3)]
        sleeper = asyncio.ensure_future(busy.execute("SELECT pg_sleep(30) /* <!here> <@U0DATA02> */"))
        waiting: asyncio.Future[Any] | None = None
        try:
            await asyncio.sleep(0.4)
            await s.slash(ALICE, "report prod", command="/db")  # before the lock: the report sizes tables
            await holder.execute("CREATE TABLE t (id int)")
            await holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE /* <!everyone> */")
            waiting = asyncio.ensure_future(waiter.fetch("SELECT * FROM t /* <!channel> */"))
            for _ in range(50):
                await s.slash(ALICE, "blockers prod", command="/db")
                blockers = [m for m in s.slack.messages(CHANNEL) if "Blocked sessions" in json.dumps(m.blocks)]
                if blockers:
                    break
                await asyncio.sleep(0.05)
            sent = json.dumps([c.args for c in s.slack.calls if c.method == "chat.postMessage"])
            assert "&lt;!here&gt;" in sent, "the long query is in the report, escaped"
            assert "&lt;!everyone&gt;" in sent and "&lt;!channel&gt;" in sent, "blocker and waiter, escaped"
            for raw in ("<!here>", "<!everyone>", "<!channel>", "<@U0DATA02>"):
                assert raw not in sent
            assert s.slack.stray_mentions() == []
        finally:
            sleeper.cancel()
            if waiting is not None:
                waiting.cancel()
            for conn in (busy, holder, waiter):
                conn.terminate()


# --- 2. merged ticks ----------------------------------------------------------------------------------


async def test_two_people_ticking_from_the_same_version_keep_both_ticks(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        await s.slash(ALICE, "staging")
        msg = s.last_run_message()
        seen = s.driver.snapshot(CHANNEL, msg.ts)  # both clients show this version
        old_block = next(b["block_id"] for b in seen.blocks if b["block_id"].startswith("checklist:"))
        await s.driver.toggle(ALICE, CHANNEL, msg.ts, "checklist", "review", seen=seen)
        await s.settle()
        await s.driver.toggle(BOB, CHANNEL, msg.ts, "checklist", "rollback_plan", seen=seen)
        await s.settle()
        run = runs.by_message(s.store, CHANNEL, msg.ts)
        assert run is not None
        held = {k: t["by"] for k, t in ticks.ticks(s.store, run["id"]).items() if t["checked"]}
        assert held == {"review": ALICE, "rollback_plan": BOB}
        text = s.text_of(s.last_run_message())
        assert "Review migration files" in text and "ticked by <@U0ALICE>" in text and "ticked by <@U0BOB>" in text
        # Bob's client showed an old version: he is told, and the boxes get a new block_id
        assert any("Someone changed the checklist" in t for t in s.ephemerals_for(BOB))
        assert not any("Someone changed the checklist" in t for t in s.ephemerals_for(ALICE))
        new_block = next(b["block_id"] for b in s.last_run_message().blocks
                         if b["block_id"].startswith("checklist:"))
        assert new_block != old_block and new_block.endswith(f":{run['id']}")
        # unticking from a fresh view removes only that tick
        await s.driver.toggle(ALICE, CHANNEL, msg.ts, "checklist", "review", checked=False)
        await s.settle()
        assert {k for k, t in ticks.ticks(s.store, run["id"]).items() if t["checked"]} == {"rollback_plan"}


async def test_a_refused_click_puts_the_boxes_back_under_a_new_block_id(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        await s.slash(ALICE, "staging")
        msg = s.last_run_message()
        before = next(b["block_id"] for b in msg.blocks if b["block_id"].startswith("checklist:"))
        seen = s.driver.snapshot(CHANNEL, msg.ts)
        await s.click(ALICE, "abort")
        await s.driver.toggle(BOB, CHANNEL, msg.ts, "checklist", "review", seen=seen)
        await s.settle()
        assert any("no longer open" in t for t in s.ephemerals_for(BOB))
        after = [b["block_id"] for b in s.last_run_message().blocks if b["block_id"].startswith("checklist:")]
        assert before not in after


# --- 3. channels of every kind ------------------------------------------------------------------------


async def test_a_run_requested_in_a_dm_does_not_tick_team_notification(stack_with: Factory) -> None:
    async with stack_with() as s:
        dm = s.slack.add_dm(ALICE)
        await s.driver.slash(ALICE, "/migrate", "staging", dm)
        await s.settle()
        (msg,) = run_messages(s.slack, dm)
        text = s.text_of(msg)
        assert "directmessage" not in text
        assert "Team notification: this run was requested in a direct message" in text
        info = [c for c in s.slack.calls_to("conversations.info") if c.ok]
        assert info and info[0].args["channel"] == dm


async def test_a_private_channel_without_the_bot_gets_one_answer_to_invite_it(stack_with: Factory) -> None:
    async with stack_with() as s:
        s.slack.add_channel(PRIVATE, "secrets", private=True, bot_member=False)
        await s.driver.slash(ALICE, "/migrate", "staging", PRIVATE)
        await s.settle()
        posts = s.slack.calls_to("chat.postMessage")
        assert [c.error for c in posts] == ["channel_not_found"]
        assert s.slack.calls_to("chat.postEphemeral") == [], "no second, doomed call"
        (answer,) = s.slack.calls_to("response_url")
        assert answer.ok and "/invite @migrabot" in answer.args["text"]
        assert runs.count_open(s.store) == 0, "nothing was started, the environment is free"


async def test_a_group_dm_with_only_the_requester_and_a_channel_of_one(stack_with: Factory) -> None:
    async with stack_with() as s:
        s.slack.add_channel(OTHER, "alice-only", members={ALICE})
        await s.driver.slash(ALICE, "/migrate", "staging", OTHER)
        await s.settle()
        (msg,) = run_messages(s.slack, OTHER)
        assert "Team notification: nobody but the requester is in #alice-only" in s.text_of(msg)


async def test_the_bot_joins_a_public_channel_it_posts_in_so_reactions_count(stack_with: Factory) -> None:
    async with stack_with() as s:
        s.slack.add_channel(OTHER, "release", bot_member=False)
        await s.driver.slash(BOB, "/migrate", "staging", OTHER)
        await s.settle()
        (msg,) = run_messages(s.slack, OTHER)
        assert [c.ok for c in s.slack.calls_to("conversations.join")] == [True]
        assert s.slack.conversations[OTHER].bot_member
        assert "Team notification: this run was announced in #release" in s.text_of(msg)


async def test_without_channels_join_the_thread_says_reactions_will_not_count(stack_with: Factory) -> None:
    async with stack_with() as s:
        s.slack.scopes.discard("channels:join")
        s.slack.add_channel(OTHER, "release", bot_member=False)
        await s.driver.slash(BOB, "/migrate", "staging", OTHER)
        await s.settle()
        (msg,) = run_messages(s.slack, OTHER)
        assert any("reactions here do not reach me" in r.text for r in msg.replies)
        assert await s.driver.react(CAROL, OTHER, msg.ts, "white_check_mark") is None, "Slack sends no event"


async def test_slash_commands_from_dms_and_private_channels_carry_slack_placeholders() -> None:
    slack = LocalSlack(users={ALICE: "alice"})
    dm = slack.add_dm(ALICE)
    slack.add_channel(PRIVATE, "secrets", private=True)
    assert slack.channel_name_for_command(dm) == "directmessage"
    assert slack.channel_name_for_command(PRIVATE) == "privategroup"


# --- 6. the environment's channel ---------------------------------------------------------------------


async def test_runs_go_to_the_environment_channel_given_by_name(stack_with: Factory) -> None:
    async with stack_with(staging_channel="#deploys") as s:
        s.slack.add_channel(OTHER, "random")
        await s.driver.slash(ALICE, "/migrate", "staging", OTHER)
        await s.settle()
        assert run_messages(s.slack, OTHER) == []
        (msg,) = run_messages(s.slack, CHANNEL)
        run = runs.by_message(s.store, CHANNEL, msg.ts)
        assert run is not None and run["channel"] == CHANNEL, "the id Slack answered, not the name"
        (told,) = [m.text for m in s.slack.ephemerals(OTHER, ALICE)]
        assert f"<#{CHANNEL}>" in told and "open it" in told
        await s.tick_all(ALICE)
        updates = s.slack.calls_to("chat.update")
        assert updates and all(c.args["channel"] == CHANNEL and c.ok for c in updates)


# --- 5. block ids and action ids ------------------------------------------------------------------------


async def test_action_ids_are_unique_in_every_message_the_bot_sent(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        await s.slash(BOB, "production")
        await s.click(CAROL, "approve")
        await s.slash(ALICE, "staging")
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")
        sent = [c.args.get("blocks") or [] for c in s.slack.calls
                if c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral")]
        assert len(sent) > 5
        for blocks in sent:
            ids = [e.get("action_id") for b in blocks for e in
                   (b.get("elements") or []) + ([b["accessory"]] if b.get("accessory") else []) if e.get("action_id")]
            assert len(ids) == len(set(ids)), ids


# --- 4. rate limits ------------------------------------------------------------------------------------


def many_migrations(count: int) -> dict[str, str]:
    return {f"202401010000{i:02d}_step_{i:02d}": f'CREATE TABLE "t{i:02d}" ("id" INT, "note" TEXT);\n'
            f"-- migration {i}: WHERE a < b\n" for i in range(count)}


@pytest.mark.parametrize(("pace", "time_factor"), [(True, 0.1), (False, 1.0)],
                         ids=["paced-fast-limits", "unpaced-slack-limits"])
async def test_thirty_pending_migrations_lose_no_message_under_rate_limits(
        stack_with: Factory, pace: bool, time_factor: float, capsys: pytest.CaptureFixture[str]) -> None:
    """Paced as the bot is, or not paced at all against Slack's real posting limit (a burst of 3,
    then 1 per second): every SQL reply and every update arrives; the 429s are retried and counted."""
    migrations = many_migrations(30)
    async with stack_with(staging_channel=CHANNEL, migrations=migrations, pace=pace, time_factor=time_factor) as s:
        await s.slash(ALICE, "staging")
        msg = s.last_run_message()
        thread = json.dumps([r.blocks for r in msg.replies])
        missing = [n for n in migrations if f"{n}/migration.sql" not in thread]
        assert missing == [], "every migration's SQL is in the thread"
        assert len([r for r in msg.replies if "migration" in r.text]) <= 5, "grouped, not one reply each"
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")
        await wait_for(lambda: "Succeeded" in s.text_of(s.last_run_message()), timeout=120)
        assert await applied(s.config.environment("staging").database_url) == sorted(migrations)
        assert s.slack.errors() == []
        seen = len(s.slack.rate_limited)
        by_method = sorted({c.method: sum(1 for d in s.slack.rate_limited if d.method == c.method)
                            for c in s.slack.rate_limited}.items())
        retried, waited = s.wf.slack.delayed(CHANNEL)
        notes = [r.text for r in s.last_run_message().replies if "rate limits delayed" in r.text]
        with capsys.disabled():
            print(f"\n[rate limits, {'paced' if pace else 'unpaced'}, time factor {time_factor}] 429s answered "
                  f"by the stand-in: {seen} {by_method}; seen and retried by the bot on the run's channel: "
                  f"{retried} ({waited:.1f} s waited); thread notes: {len(notes)}")
        if retried:  # the closing note counts what was retried until the run ended (updates may follow)
            assert notes, "the thread says Slack delayed it"
            told = int(re.search(r"(\d+) answer\(s\) of 429", notes[-1]).group(1))  # type: ignore[union-attr]
            assert 0 < told <= retried
        if not pace:
            assert any(c.method == "chat.postMessage" for c in s.slack.rate_limited), \
                "unpaced, the thread replies meet Slack's posting limit"


async def test_render_keeps_a_message_of_thirty_migrations_within_block_kit(stack_with: Factory) -> None:
    async with stack_with(staging_channel=CHANNEL, migrations=many_migrations(30)) as s:
        await s.slash(ALICE, "staging")
        view = await s.wf.view(runs.by_message(s.store, CHANNEL, s.last_run_message().ts)["id"])  # type: ignore[index]
        assert view is not None
        _, blocks = render_run(view)
        assert len(blocks) <= 50
        assert s.all_payloads_valid() == []
