"""`/migrate` end to end: real HTTP, signed requests, the local Slack stand-in, real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botstack import ALICE, BOB, CAROL, CHANNEL, DAVE, BotStack, StackFactory, applied


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[BotStack]:
    async with make_stack() as s:
        yield s


async def test_staging_happy_path_from_request_to_success(stack: BotStack) -> None:
    status, _ = await stack.slash(ALICE, "staging")
    assert status == 200
    msg = stack.last_run_message()
    text = stack.text_of(msg)
    assert "Migration: staging" in text and "20240101000000_init" in text
    assert "Zero-downtime safe: yes" in text
    assert "Database backup: backup pre-flight passed" in text
    assert "run" not in stack.action_ids(msg), "Run must not be offered before the checklist is done"
    # the SQL of each pending migration is in the thread, several migrations per reply (rate limits)
    assert len(msg.replies) == 1 and 'CREATE TABLE "users"' in str(msg.replies[0].blocks)
    assert 'ALTER TABLE "users" ADD COLUMN' in str(msg.replies[0].blocks)

    await stack.tick_all(ALICE)
    msg = stack.last_run_message()
    assert "ticked by <@U0ALICE>" in stack.text_of(msg)
    assert "run" in stack.action_ids(msg)

    await stack.click(ALICE, "run")
    msg = stack.last_run_message()
    text = stack.text_of(msg)
    assert "Succeeded" in text, text
    assert "Backup (pg_dump)" in text and "verified" in text
    assert "Apply `20240102000000_add_display_name`" in text
    assert "status clean" in text
    url = stack.config.environment("staging").database_url
    assert await applied(url) == ["20240101000000_init", "20240102000000_add_display_name"]
    backups = list((Path(stack.config.environment("staging").backup_dir) / "staging").iterdir())
    assert len(backups) == 1 and (backups[0] / "manifest.json").exists()
    assert stack.all_payloads_valid() == []


async def test_prod_needs_staging_two_approvers_and_typed_confirmation(stack: BotStack) -> None:
    await stack.slash(BOB, "production")  # an alias
    msg = stack.last_run_message()
    assert "Migration: prod" in stack.text_of(msg)
    assert "Test on staging" in stack.text_of(msg) and "has not applied" in stack.text_of(msg)

    # self-approval and a non-approver are refused, ephemeral, and not counted
    await stack.click(BOB, "approve")
    assert any("does not allow self-approval" in t for t in stack.ephemerals_for(BOB))
    await stack.click(ALICE, "approve")
    assert any("not an approver" in t for t in stack.ephemerals_for(ALICE))
    assert "Approvals* (0/2)" in stack.text_of(stack.last_run_message())
    # a user-group member approves by reaction, another by button
    await stack.driver.react(CAROL, CHANNEL, msg.ts, "white_check_mark")
    await stack.settle()
    await stack.click(DAVE, "approve")
    msg = stack.last_run_message()
    assert "Approvals* (2/2)" in stack.text_of(msg)
    await stack.tick_all(BOB)
    assert "run" not in stack.action_ids(stack.last_run_message()), "the staging gate must still block"

    # run staging for real, then re-check prod's gate
    await stack.slash(ALICE, "staging")
    await stack.tick_all(ALICE)
    await stack.click(ALICE, "run")
    assert "Succeeded" in stack.text_of(stack.last_run_message())
    prod_msg = stack.run_messages()[0]
    await stack.click(BOB, "recheck", prod_msg)
    prod_msg = stack.slack.message(CHANNEL, prod_msg.ts)
    assert "applied these 2 migrations with the same checksums" in stack.text_of(prod_msg)

    # Run opens a modal; a wrong name keeps it open with an error on the field
    await stack.click(BOB, "run", prod_msg)
    (view,) = stack.slack.open_views(BOB)
    answer = await stack.driver.submit_view(BOB, view.id, {"confirm_input": {"value": "staging"}})
    assert answer.body["response_action"] == "errors" and "confirm_input" in answer.body["errors"]
    await stack.settle()
    assert await applied(stack.config.environment("prod").database_url) == []
    answer = await stack.driver.submit_view(BOB, view.id, {"confirm_input": {"value": "prod"}})
    assert not answer.body
    await stack.settle()
    prod_msg = stack.slack.message(CHANNEL, prod_msg.ts)
    assert "Succeeded" in stack.text_of(prod_msg)
    assert len(await applied(stack.config.environment("prod").database_url)) == 2
    assert stack.all_payloads_valid() == []
