"""`/rollback` end to end: restore a chosen backup (typed RESTORE), partial rollback, resolve, the shared lock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from actions.backup import list_backups, take_backup
from actions.db import database_name
from state import audit, runs
from tests.botstack import ALICE, BOB, CAROL, CHANNEL, DAVE, BotStack, StackFactory, applied
from tests.test_migrate_safety import FAILING

WITH_DOWN = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_add_nick": 'ALTER TABLE "users" ADD COLUMN "nick" TEXT;',
}


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[BotStack]:
    async with make_stack(WITH_DOWN) as s:
        yield s


async def sql(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def migrate(s: BotStack, env: str = "staging", approvers: tuple[str, ...] = ()) -> None:
    await s.slash(ALICE, env)
    for who in approvers:
        await s.click(who, "approve")
    await s.tick_all(ALICE)
    await s.click(ALICE, "run")
    if env == "prod":
        (view,) = s.slack.open_views(ALICE)
        await s.driver.submit_view(ALICE, view.id, {"confirm_input": {"value": "prod"}})
        await s.settle()
    assert "Succeeded" in s.text_of(s.last_run_message())


async def backup_now(s: BotStack, env_name: str) -> str:
    env = s.config.environment(env_name)
    info = await take_backup(env.migration_url, env.backup_dir, env.name, reason="test", requested_by="test")
    return info.id


async def choose(s: BotStack, user: str, backup_id: str) -> None:
    msg = s.last_run_message()
    await s.driver.select(user, CHANNEL, msg.ts, "choose_backup", backup_id)
    await s.settle()


async def restore_typed(s: BotStack, user: str, words: list[str]) -> list[Any]:
    await s.click(user, "run")
    (view,) = s.slack.open_views(user)
    answers = []
    for word in words:
        answers.append(await s.driver.submit_view(user, view.id, {"confirm_input": {"value": word}}))
        await s.settle()
    return answers


async def test_staging_rollback_restores_the_chosen_backup_and_keeps_everything(stack: BotStack) -> None:
    await migrate(stack)
    url = stack.config.environment("staging").database_url
    await sql(url, "INSERT INTO users (email) VALUES ('a@x'), ('b@x')")
    chosen = await backup_now(stack, "staging")
    await sql(url, "INSERT INTO users (email) VALUES ('written-after@x')")

    await stack.slash(ALICE, "staging", command="/rollback")
    msg = stack.last_run_message()
    assert "Rollback (restore a backup): staging" in stack.text_of(msg)
    select = [b["accessory"] for b in msg.blocks if b.get("accessory", {}).get("type") == "static_select"]
    assert select[0]["options"][0]["value"] == chosen, "newest first"
    await choose(stack, ALICE, chosen)
    text = stack.text_of(stack.last_run_message())
    assert "safety snapshot" in text and "no migration was applied since then" in text

    answers = await restore_typed(stack, ALICE, ["restore", "RESTORE ", "", "RESTORE"])
    for wrong in answers[:3]:
        assert wrong.body["response_action"] == "errors" and "RESTORE" in wrong.body["errors"]["confirm_input"]
    assert not answers[3].body
    text = stack.text_of(stack.last_run_message())
    assert "Succeeded" in text and f"restored backup `{chosen}`" in text, text
    assert await sql(url, "SELECT string_agg(email, ',' ORDER BY id) FROM users") == "a@x,b@x"
    env = stack.config.environment("staging")
    snapshots = [b for b in list_backups(env.backup_dir, "staging") if b.kind == "pre-restore"]
    assert len(snapshots) == 1 and snapshots[0].id in text
    db = database_name(url)
    kept = await sql(url, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{db}__before_restore_%'")
    assert kept == 1
    assert stack.all_payloads_valid() == []


async def test_prod_rollback_needs_approvals_and_refuses_a_corrupt_backup(stack: BotStack) -> None:
    await migrate(stack, "staging")
    await migrate(stack, "prod", approvers=(BOB, CAROL))
    url = stack.config.environment("prod").database_url
    await sql(url, "INSERT INTO users (email) VALUES ('keep@x')")
    good = await backup_now(stack, "prod")
    await stack.slash(BOB, "prod", command="/rollback")
    await choose(stack, BOB, good)
    assert "run" not in stack.action_ids(stack.last_run_message()), "approvals first"
    await stack.click(BOB, "approve")
    assert any("self-approval" in t for t in stack.ephemerals_for(BOB))
    await stack.click(DAVE, "approve")
    await stack.driver.react(CAROL, CHANNEL, stack.last_run_message().ts, "white_check_mark")
    await stack.settle()
    # the archive is damaged after the approval: the restore fails before any swap
    env = stack.config.environment("prod")
    dump = next(b for b in list_backups(env.backup_dir, "prod") if b.id == good).dump_path
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    await sql(url, "INSERT INTO users (email) VALUES ('written-after@x')")
    await restore_typed(stack, BOB, ["RESTORE"])
    text = stack.text_of(stack.last_run_message())
    assert "Failed" in text or "FAILED" in text, text
    assert "original database is untouched" in text
    assert await sql(url, "SELECT count(*) FROM users WHERE email = 'written-after@x'") == 1
    db = database_name(url)
    assert await sql(url, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{db}\\_\\_%'") == 0


@pytest.mark.parametrize("down_file", ["down.sql", "rollback.sql"])
async def test_partial_rollback_with_an_inverse_file(make_stack: StackFactory, down_file: str) -> None:
    async with make_stack(WITH_DOWN, files={f"20240102000000_add_nick/{down_file}":
                                            'ALTER TABLE "users" DROP COLUMN "nick";'}) as s:
        await migrate(s)
        await s.slash(ALICE, "staging last", command="/rollback")
        msg = s.last_run_message()
        assert "20240102000000_add_nick" in s.text_of(msg) and down_file in s.text_of(msg)
        assert "DROP COLUMN" in json.dumps(msg.replies[-1].blocks), "the inverse SQL is shown in the thread"
        await s.click(ALICE, "run")
        text = s.text_of(s.last_run_message())
        assert "Succeeded" in text and "pending again" in text, text
        url = s.config.environment("staging").database_url
        assert await applied(url) == ["20240101000000_init"]
        assert await sql(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'nick'") == 0


async def test_partial_rollback_without_an_inverse_file_offers_the_restore(stack: BotStack) -> None:
    await migrate(stack)
    await stack.slash(ALICE, "staging last", command="/rollback")
    (note,) = stack.ephemerals_for(ALICE)
    assert "down.sql" in note and "/rollback staging" in note
    assert len(stack.run_messages()) == 1  # only the migration's


async def test_resolve_from_the_incident_message(make_stack: StackFactory) -> None:
    async with make_stack(FAILING) as s:
        await s.slash(ALICE, "staging")
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")
        failed_msg = s.last_run_message()
        incident = [r for r in failed_msg.replies if r.blocks and "incident" in json.dumps(r.blocks)][-1]
        await s.click(ALICE, "incident_mark_rolled_back", s.slack.message(CHANNEL, incident.ts))
        text = s.text_of(s.last_run_message())
        assert "Resolve a migration: staging" in text and "Succeeded" in text, text
        url = s.config.environment("staging").database_url
        rows = await sql(url, "SELECT count(*) FROM _prisma_migrations WHERE rolled_back_at IS NOT NULL")
        assert rows == 1
        # resolving it again is refused in one sentence (Prisma P3012)
        await s.slash(ALICE, "resolve staging 20240102000000_broken rolled-back")
        assert any("P3012" in t for t in s.ephemerals_for(ALICE))


async def test_resolve_on_prod_needs_one_approval(make_stack: StackFactory) -> None:
    async with make_stack(FAILING) as s:
        await s.slash(ALICE, "prod")
        msg = s.last_run_message()
        await s.click(BOB, "approve")
        await s.click(CAROL, "approve")
        await s.tick_all(ALICE)  # the staging gate fails: push the failing file onto prod by hand instead
        from actions.deploy import deploy
        env = s.config.environment("prod")
        await deploy(env.migration_url, env.migrations_dir)
        await s.click(ALICE, "abort", msg)
        await s.slash(ALICE, "resolve prod 20240102000000_broken applied")
        text = s.text_of(s.last_run_message())
        assert "Approvals* (0/1)" in text and "Succeeded" not in text
        await s.click(BOB, "approve")
        await s.click(ALICE, "run")
        assert "Succeeded" in s.text_of(s.last_run_message())
        assert "20240102000000_broken" in await applied(env.database_url)


async def test_rollback_and_migration_share_the_lock(stack: BotStack) -> None:
    await migrate(stack)
    await backup_now(stack, "prod")
    # a rollback is open on staging: a migration there is refused, naming who holds the lock
    await stack.slash(ALICE, "staging", command="/rollback")
    await stack.slash(BOB, "staging last", command="/rollback")
    assert any("locked by <@U0ALICE>" in t for t in stack.ephemerals_for(BOB))
    # a migration is open on prod: a rollback or an undo there is refused the same way
    await stack.slash(BOB, "prod")
    await stack.slash(ALICE, "prod", command="/rollback")
    await stack.slash(ALICE, "prod last", command="/rollback")
    refusals = [t for t in stack.ephemerals_for(ALICE) if "locked by <@U0BOB>" in t]
    assert len(refusals) == 2 and "since" in refusals[0]
    assert len([m for m in stack.run_messages() if "Rollback (restore" in stack.text_of(m)]) == 1


async def test_double_submit_and_retried_request_restore_once(stack: BotStack) -> None:
    await migrate(stack)
    chosen = await backup_now(stack, "staging")
    await stack.driver.slash(ALICE, "/rollback", "staging", CHANNEL)
    await stack.driver.slash(ALICE, "/rollback", "staging", CHANNEL, retry_num=1)
    await stack.settle()
    assert len([m for m in stack.run_messages() if "Rollback (restore" in stack.text_of(m)]) == 1
    await choose(stack, ALICE, chosen)
    await stack.click(ALICE, "run")
    (view,) = stack.slack.open_views(ALICE)
    await asyncio.gather(stack.driver.submit_view(ALICE, view.id, {"confirm_input": {"value": "RESTORE"}}),
                         stack.driver.submit_view(ALICE, view.id, {"confirm_input": {"value": "RESTORE"}}))
    await stack.settle()
    run_id = runs.by_message(stack.store, CHANNEL, stack.last_run_message().ts)["id"]
    assert [e["action"] for e in audit.entries(stack.store, run_id=run_id)].count("run") == 1
    env = stack.config.environment("staging")
    assert len([b for b in list_backups(env.backup_dir, "staging") if b.kind == "pre-restore"]) == 1


async def test_cancel_at_the_restore_prompt_ends_the_rollback_with_nothing_done(stack: BotStack) -> None:
    await migrate(stack)
    chosen = await backup_now(stack, "staging")
    await stack.slash(ALICE, "staging", command="/rollback")
    await choose(stack, ALICE, chosen)
    await stack.click(ALICE, "run")
    (view,) = stack.slack.open_views(ALICE)
    await stack.driver.close_view(ALICE, view.id)
    await stack.settle()
    text = stack.text_of(stack.last_run_message())
    assert "Cancelled" in text and "nothing was changed" in text
    env = stack.config.environment("staging")
    assert [b for b in list_backups(env.backup_dir, "staging") if b.kind == "pre-restore"] == []
    await stack.slash(BOB, "staging", command="/rollback")  # the lock is free again
    assert len([m for m in stack.run_messages() if "Rollback (restore" in stack.text_of(m)]) == 2


async def test_an_inverse_file_edited_after_approval_is_not_run(make_stack: StackFactory) -> None:
    down = "20240102000000_add_nick/down.sql"
    async with make_stack(WITH_DOWN, files={down: 'ALTER TABLE "users" DROP COLUMN "nick";'}) as s:
        await migrate(s)
        await s.slash(ALICE, "staging last", command="/rollback")
        (s.config.environment("staging").migrations_dir / down).write_text('DROP TABLE "users";')
        await s.click(ALICE, "run")
        text = s.text_of(s.last_run_message())
        assert "changed on disk since it was shown" in text, text
        url = s.config.environment("staging").database_url
        assert len(await applied(url)) == 2 and await sql(url, "SELECT count(*) FROM users") == 0
