"""`/migrate` rules that keep production safe: abort, failure incident, lock, retries, double clicks, signing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from state import audit, runs
from tests import pgserver
from tests.botstack import (
    ALICE,
    BOB,
    CHANNEL,
    BotStack,
    StackFactory,
    applied,
    bot_stack,
    make_config,
    wait_for,
    write_migrations,
)
from tests.pgserver import with_password

SLOW = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_slow": 'SELECT pg_sleep(1.5);\nALTER TABLE "users" ADD COLUMN "nick" TEXT;',
    "20240103000000_more": 'ALTER TABLE "users" ADD COLUMN "bio" TEXT;',
}
FAILING = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_broken": 'ALTER TABLE "users" ADD COLUMN "x" TEXT;\nSELECT 1/0;',
}

@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[BotStack]:
    async with make_stack() as s:
        yield s


def step_status(s: BotStack, run_id: int, name: str) -> str | None:
    rows = list(s.store.db["steps"].rows_where("run_id = ? AND name = ?", [run_id, name]))
    return rows[0]["status"] if rows else None


async def test_abort_before_the_run_changes_nothing_and_frees_the_environment(stack: BotStack) -> None:
    await stack.slash(ALICE, "staging")
    await stack.click(ALICE, "abort")
    msg = stack.last_run_message()
    assert "Aborted" in stack.text_of(msg) and "nothing was changed" in stack.text_of(msg)
    assert not {"run", "approve", "abort"} & set(stack.action_ids(msg))
    assert await applied(stack.config.environment("staging").database_url) == []
    await stack.slash(BOB, "staging")  # the lock was released
    assert len(stack.run_messages()) == 2


async def test_abort_during_the_run_stops_between_migrations(make_stack: StackFactory) -> None:
    async with make_stack(SLOW) as s:
        await s.slash(ALICE, "staging")
        await s.tick_all(ALICE)
        msg = s.last_run_message()
        run_id = runs.by_message(s.store, CHANNEL, msg.ts)["id"]
        await s.driver.click(ALICE, CHANNEL, msg.ts, "run")
        await wait_for(lambda: step_status(s, run_id, "migration:20240102000000_slow") == "running")
        # no Abort button while a migration is being applied; the slash command still works
        await s.driver.slash(ALICE, "/migrate", "abort staging", CHANNEL)
        await s.settle()
        text = s.text_of(s.last_run_message())
        assert "Aborted" in text, text
        assert await applied(s.config.environment("staging").database_url) == [
            "20240101000000_init", "20240102000000_slow"]
        assert step_status(s, run_id, "migration:20240103000000_more") == "aborted"


async def test_a_failing_migration_posts_an_incident_with_its_logs_and_buttons(make_stack: StackFactory) -> None:
    async with make_stack(FAILING) as s:
        await s.slash(ALICE, "staging")
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")
        msg = s.last_run_message()
        text = s.text_of(msg)
        assert "FAILED" in text and "20240102000000_broken" in text
        incident = [r for r in msg.replies if "failed" in r.text.lower() and r.blocks]
        assert incident, [r.text for r in msg.replies]
        body = json.dumps(incident[-1].blocks)
        assert "division by zero" in body and "preserved in backup" in body
        assert {"incident_rollback", "incident_mark_rolled_back", "incident_fix_forward"} <= set(
            e["action_id"] for b in incident[-1].blocks if b["type"] == "actions" for e in b["elements"])
        # broadcast to the channel as well as the thread
        assert any(c.args.get("reply_broadcast") for c in s.slack.calls_to("chat.postMessage"))
        # the schema change of the failed file rolled back; the first migration stays
        url = s.config.environment("staging").database_url
        assert await applied(url) == ["20240101000000_init"]
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                       "WHERE table_name = 'users' AND column_name = 'x'") == 0
        finally:
            await conn.close()
        await s.click(BOB, "incident_fix_forward", s.slack.message(CHANNEL, incident[-1].ts))
        assert "fix forward" in s.text_of(s.last_run_message())


async def test_concurrent_requests_for_one_environment_get_one_run(stack: BotStack) -> None:
    answers = await asyncio.gather(stack.driver.slash(ALICE, "/migrate", "prod", CHANNEL),
                                   stack.driver.slash(BOB, "/migrate", "prod", CHANNEL))
    assert [a.status for a in answers] == [200, 200]
    await stack.settle()
    assert len(stack.run_messages()) == 1
    holder = runs.get(stack.store, runs.open_runs(stack.store, "prod")[0]["id"])["requested_by"]
    loser = BOB if holder == ALICE else ALICE
    (refusal,) = stack.ephemerals_for(loser)
    assert "locked by" in refusal and f"<@{holder}>" in refusal and "since" in refusal


async def test_a_retried_slash_command_starts_one_run(stack: BotStack) -> None:
    await stack.driver.slash(ALICE, "/migrate", "staging", CHANNEL)
    await stack.driver.slash(ALICE, "/migrate", "staging", CHANNEL, retry_num=1)
    await stack.settle()
    assert len(stack.run_messages()) == 1
    assert stack.ephemerals_for(ALICE) == [], "a retry is not a second request: no lock refusal either"


async def test_a_double_click_on_run_runs_once(stack: BotStack) -> None:
    await stack.slash(ALICE, "staging")
    await stack.tick_all(ALICE)
    msg = stack.last_run_message()
    await asyncio.gather(stack.driver.click(ALICE, CHANNEL, msg.ts, "run"),
                         stack.driver.click(ALICE, CHANNEL, msg.ts, "run"))
    await stack.settle()
    run_id = runs.by_message(stack.store, CHANNEL, msg.ts)["id"]
    assert [e["action"] for e in audit.entries(stack.store, run_id=run_id)].count("run") == 1
    backups = list((Path(stack.config.environment("staging").backup_dir) / "staging").iterdir())
    assert len(backups) == 1
    assert "Succeeded" in stack.text_of(stack.last_run_message())


async def test_unknown_environment_and_extra_words_get_usage_and_nothing_happens(stack: BotStack) -> None:
    answer = await stack.slash(ALICE, "stagin")
    assert answer.status == 200 and 'unknown environment "stagin"' in answer.body["text"]
    assert "staging, prod (production)" in answer.body["text"]
    answer = await stack.slash(ALICE, "status staging now please")
    assert "unexpected extra words" in answer.body["text"]
    assert stack.run_messages() == [] and stack.store.db["runs"].count == 0


async def test_status_plan_history_answer_the_person_only(stack: BotStack) -> None:
    await stack.slash(ALICE, "status staging")
    await stack.slash(ALICE, "plan staging")
    await stack.slash(ALICE, "history staging")
    texts = stack.ephemerals_for(ALICE)
    assert "not up to date" in texts[0] and "Pending (2)" in texts[0]
    assert "Plan for staging" in texts[1] and "safe" in texts[1]
    assert "No runs on staging yet" in texts[2]
    assert stack.run_messages() == []


async def test_forged_signature_and_stale_timestamp_are_rejected_with_nothing_done(stack: BotStack) -> None:
    body = b"command=%2Fmigrate&text=staging&user_id=U0ALICE&channel_id=C0DEPLOYS&trigger_id=t1"
    forged = await stack.driver.post(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    stale = await stack.driver.post(body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 600)
    assert forged.status == 401 and stale.status == 401
    await stack.settle()
    assert stack.store.db["runs"].count == 0 and stack.slack.calls_to("chat.postMessage") == []


async def test_restart_with_an_open_run_keeps_its_message_working(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        await s.slash(ALICE, "staging")
        msg = s.last_run_message()
        config, slack = s.config, s.slack
    # a new bot process on the same state file, same channel history
    async with bot_stack(config) as s2:
        s2.slack._channel_msgs, s2.slack._by_ts = slack._channel_msgs, slack._by_ts
        await s2.tick_all(ALICE, msg)
        await s2.click(ALICE, "run", s2.slack.message(CHANNEL, msg.ts))
        assert "Succeeded" in s2.text_of(s2.slack.message(CHANNEL, msg.ts))


async def test_no_password_reaches_slack(tmp_path: Path, pg_server: pgserver.Server, database: str,
                                         prod_database: str) -> None:
    password = "Sup3rS3cretPw"
    write_migrations(tmp_path / "migrations", FAILING)
    refused = f"postgresql://postgres:{password}@127.0.0.1:1/{prod_database}"
    config = make_config(tmp_path, with_password(pg_server.url_for(database), password), refused)
    async with bot_stack(config) as s:
        await s.slash(ALICE, "staging")
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")  # fails: logs, incident
        await s.slash(ALICE, "status prod")  # cannot connect: the refusal names host and port
        await s.slash(ALICE, "plan staging")
        assert "FAILED" in s.text_of(s.run_messages()[0])
        assert any("connection refused" in t for t in s.ephemerals_for(ALICE))
        everything = json.dumps([c.args for c in s.slack.calls])
        assert password not in everything
        assert s.all_payloads_valid() == []


async def test_a_migration_edited_after_approval_is_not_applied(stack: BotStack) -> None:
    await stack.slash(ALICE, "staging")
    await stack.tick_all(ALICE)
    folder = stack.config.environment("staging").migrations_dir
    edited = folder / "20240102000000_add_display_name" / "migration.sql"
    edited.write_text('ALTER TABLE "users" ADD COLUMN "display_name" VARCHAR(255);\nDROP TABLE "users";\n')
    await stack.click(ALICE, "run")
    text = stack.text_of(stack.last_run_message())
    assert "FAILED" in text and "changed on disk since it was shown for approval" in text, text
    assert await applied(stack.config.environment("staging").database_url) == []


async def test_answers_reach_the_person_where_the_bot_cannot_post(stack: BotStack) -> None:
    """A private channel the bot is not in: chat.postEphemeral fails, the response_url still works."""
    private = "C0PRIVATE"
    await stack.driver.slash(ALICE, "/migrate", "status staging", private)
    await stack.settle()
    assert [c.error for c in stack.slack.calls_to("chat.postEphemeral")] == ["channel_not_found"]
    answers = [m.text for m in stack.slack.ephemerals(private, ALICE)]
    assert any("Migration status of staging" in t for t in answers), answers
