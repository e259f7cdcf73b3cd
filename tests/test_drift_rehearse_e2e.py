"""Drift and rehearsal from Slack, end to end: real HTTP, the Slack stand-in, real PostgreSQL and pg_dump.

`/db drift` in sync and drifted; the "Schema matches the migrations" item blocking or warning;
the drift_cron check posting once per change; `/migrate rehearse` and the Rehearse button posting
the table in the run's thread, the run message showing the rehearsal fresh or stale, and
``require_rehearsal`` holding Run; a migration that fails in the rehearsal leaves prod untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actions.backup import take_backup
from actions.deploy import deploy
from bot import scheduler
from tests.botstack import ALICE, CAROL, CHANNEL, DAVE, MIGRATIONS, BotStack, applied, write_migrations

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")

INIT = "20240101000000_init"
SECOND = "20240102000000_add_display_name"


async def _sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _deploy_only(url: str, tmp: Path, names: list[str], migrations: dict[str, str] | None = None) -> None:
    """Deploy some of the migrations (the same files, so the same checksums) to one database."""
    source = migrations or MIGRATIONS
    folder = write_migrations(tmp / f"only_{len(names)}", {n: source[n] for n in names})
    outcome = await deploy(url, folder)
    assert outcome.ok, outcome


def _replies(s: BotStack, msg: Any) -> str:
    fresh = s.slack.message(CHANNEL, msg.ts) or msg
    return "\n".join(s.text_of(r) for r in fresh.replies)


def _channel_texts(s: BotStack) -> list[str]:
    return [s.text_of(m) for m in s.slack.messages(CHANNEL)]


async def test_db_drift_in_sync_then_an_index_added_by_hand(make_stack: Any, tmp_path: Path) -> None:
    async with make_stack() as s:
        staging = s.config.environment("staging")
        await deploy(staging.migration_url, staging.migrations_dir)
        await s.slash(ALICE, "drift staging", command="/db")
        texts = [t for t in _channel_texts(s) if "Drift check" in t]
        assert len(texts) == 1 and "staging: in sync (2 applied migration(s)" in texts[0]

        # a name from data that would ping the channel if it reached Slack unescaped
        await _sql(staging.migration_url, 'CREATE INDEX "by_hand<!channel>" ON "users" ("email")')
        await s.slash(ALICE, "drift staging", command="/db")
        texts = [t for t in _channel_texts(s) if "Drift check" in t]
        assert len(texts) == 2
        assert "staging: DRIFTED (1 difference)" in texts[1]
        assert "by_hand&lt;!channel&gt;" in texts[1] and "exists only in the database" in texts[1]
        assert "way back:" in texts[1] and "DROP INDEX" in texts[1]
        assert not s.all_payloads_valid()


async def test_drift_item_blocks_run_on_a_drifted_prod(make_stack: Any, prod_database: str, tmp_path: Path) -> None:
    async with make_stack() as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        await deploy(staging.migration_url, staging.migrations_dir)
        await _deploy_only(prod.migration_url, tmp_path, [INIT])
        await _sql(prod.migration_url, 'CREATE INDEX "users_email_by_hand" ON "users" ("email")')
        await s.slash(ALICE, "prod")
        msg = s.last_run_message()
        text = s.text_of(msg)
        assert ":x: Schema matches the migrations: 1 difference" in text
        assert "Schema matches the migrations (failed)" in text  # "Run unlocks when these are done: …"
        thread = _replies(s, msg)
        assert "Schema matches the migrations?" in thread and "users_email_by_hand" in thread
        assert "Run stays locked" in thread
        assert "Re-check" in [e["text"]["text"] for b in msg.blocks if b.get("type") == "actions"
                              for e in b["elements"] if e.get("type") == "button"]

        # the way back, then Re-check: the item passes
        await _sql(prod.migration_url, 'DROP INDEX "users_email_by_hand"')
        await s.click(ALICE, "recheck")
        text = s.text_of(s.last_run_message())
        assert ":white_check_mark: Schema matches the migrations: the live schema matches the 1 applied" in text
        assert "Schema matches the migrations (failed)" not in text
        assert await applied(prod.migration_url) == [INIT]


async def test_drift_item_only_warns_when_configured(make_stack: Any, tmp_path: Path) -> None:
    async with make_stack(drift_check='"warn"') as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        assert prod.drift_check and prod.drift_action == "warn"
        await deploy(staging.migration_url, staging.migrations_dir)
        await _deploy_only(prod.migration_url, tmp_path, [INIT])
        await _sql(prod.migration_url, 'ALTER TABLE "users" ALTER COLUMN "email" DROP NOT NULL')
        await s.slash(ALICE, "prod")
        msg = s.last_run_message()
        text = s.text_of(msg)
        assert ":warning: Schema matches the migrations: 1 difference" in text
        assert "Schema matches the migrations (" not in text  # not among what Run waits for
        thread = _replies(s, msg)
        assert "users.email" in thread and "only warns" in thread


async def test_drift_cron_posts_once_per_change(make_stack: Any) -> None:
    async with make_stack(drift_cron='"0 3 * * *"') as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        assert prod.drift_cron == "0 3 * * *"
        await deploy(prod.migration_url, prod.migrations_dir)

        def posted() -> list[str]:
            return [t for t in _channel_texts(s) if "scheduled drift check" in t]

        assert await s.wf.run(scheduler.watch_drift(s.wf, prod)) is None  # in sync at the first check: nothing to say
        await _sql(prod.migration_url, 'CREATE TABLE "made_by_hand" ("id" int)')
        assert await s.wf.run(scheduler.watch_drift(s.wf, prod)) is not None
        await s.settle()
        assert len(posted()) == 1 and "made_by_hand" in posted()[0]
        assert await s.wf.run(scheduler.watch_drift(s.wf, prod)) is None  # the same findings: not posted again
        await _sql(prod.migration_url, 'DROP TABLE "made_by_hand"')
        assert await s.wf.run(scheduler.watch_drift(s.wf, prod)) is not None  # back in sync is a change
        await s.settle()
        assert len(posted()) == 2 and "prod: in sync" in posted()[1]
        assert (Path(prod.backup_dir) / "prod" / "drift" / "last.json").is_file()
        assert any("prod: drift check at `0 3 * * *`" in r for r in scheduler.recurring_jobs(s.config))
        assert staging is not None


async def _backup(env: Any) -> str:
    info = await take_backup(env.migration_url, env.backup_dir, env.name, reason="test", requested_by="test")
    return str(info.id)


async def test_rehearse_posts_the_table_and_require_rehearsal_holds_run(make_stack: Any, tmp_path: Path) -> None:
    async with make_stack(require_rehearsal="true") as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        await deploy(staging.migration_url, staging.migrations_dir)
        await _deploy_only(prod.migration_url, tmp_path, [INIT])
        await _sql(prod.migration_url, "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 500) g")
        await _backup(prod)

        await s.slash(ALICE, "prod")
        text = s.text_of(s.last_run_message())
        assert "Not rehearsed yet" in text and "Rehearsal (failed)" in text
        assert "rehearse" in s.action_ids(s.last_run_message())

        await s.slash(ALICE, "rehearse prod")
        msg = s.last_run_message()
        thread = _replies(s, msg)
        assert "This can take minutes" in thread
        assert "Rehearsal of prod passed" in thread
        assert "statement" in thread and "held for" in thread and "ADD COLUMN" in thread
        assert "safe while the app runs" in thread
        text = s.text_of(msg)
        assert "is *fresh*" in text and "rehearsed: safe while the app runs" in text
        assert ":white_check_mark: Rehearsal: rehearsed on a restored copy" in text
        assert "Rehearsal (failed)" not in text
        assert "restore tested on" in text  # the rollback plan line
        assert await applied(prod.migration_url) == [INIT]  # the live database was only read
        assert not s.all_payloads_valid()

        # a changed migration file: a new run's plan is not what was rehearsed
        path = Path(prod.migrations_dir) / SECOND / "migration.sql"
        path.write_text(path.read_text() + "\n-- reviewed\n")
        await s.slash(ALICE, "abort prod")
        await s.slash(ALICE, "prod")
        text = s.text_of(s.last_run_message())
        assert "is *stale*" in text and "changed since the rehearsal" in text
        assert "Rehearsal (failed)" in text


async def test_a_failing_rehearsal_is_reported_and_prod_untouched(make_stack: Any, tmp_path: Path) -> None:
    migrations = {INIT: MIGRATIONS[INIT],
                  "20240103000000_email_to_int": 'ALTER TABLE "users" ALTER COLUMN "email" TYPE integer '
                                                 'USING "email"::integer;\n'}
    async with make_stack(migrations, require_rehearsal="true") as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        await _deploy_only(staging.migration_url, tmp_path, [INIT], migrations)
        await _sql(staging.migration_url, 'ALTER TABLE "users" ALTER COLUMN "email" TYPE integer USING 0')
        await _sql(staging.migration_url, "INSERT INTO _prisma_migrations (id, checksum, migration_name, "
                   "finished_at, applied_steps_count) SELECT gen_random_uuid()::text, '"
                   + __import__("hashlib").sha256(migrations["20240103000000_email_to_int"].encode()).hexdigest()
                   + "', '20240103000000_email_to_int', now(), 1")
        await _deploy_only(prod.migration_url, tmp_path, [INIT], migrations)
        await _sql(prod.migration_url, "INSERT INTO users (email) VALUES ('not a number')")
        await _backup(prod)
        await s.slash(ALICE, "prod")
        await s.click(ALICE, "rehearse")
        msg = s.last_run_message()
        thread = _replies(s, msg)
        assert "Rehearsal of prod FAILED" in thread and "email_to_int" in thread
        assert "invalid input syntax for type integer" in thread
        text = s.text_of(msg)
        assert "*failed*" in text and "Rehearsal (failed)" in text
        assert await applied(prod.migration_url) == [INIT]
        conn = await asyncpg.connect(prod.migration_url)
        try:
            assert await conn.fetchval("SELECT data_type FROM information_schema.columns "
                                       "WHERE table_name = 'users' AND column_name = 'email'") == "text"
        finally:
            await conn.close()
        assert not s.all_payloads_valid()


async def test_the_plan_shows_each_statements_lock_and_table_size(make_stack: Any, tmp_path: Path) -> None:
    async with make_stack() as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        await deploy(staging.migration_url, staging.migrations_dir)
        await _deploy_only(prod.migration_url, tmp_path, [INIT])
        await _sql(prod.migration_url, "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 2000) g",
                   "ANALYZE users")
        await s.slash(ALICE, "prod")
        msg = s.last_run_message()
        assert "est. ACCESS EXCLUSIVE on `users` (" in s.text_of(msg) and "~2,000 rows" in s.text_of(msg)
        thread = _replies(s, msg)
        assert "Impact estimates" in thread and "add_display_name" in thread and "ACCESS EXCLUSIVE" in thread
        assert "write rates are not sampled" in thread


async def test_verification_runs_verify_queries_and_analyzes_filled_tables(make_stack: Any, tmp_path: Path) -> None:
    migrations = {**MIGRATIONS, "20240103000000_fill": 'UPDATE "users" SET "display_name" = "email";\n'}
    async with make_stack(migrations, verify_queries='["SELECT count(*) FROM users", "SELECT \'<!channel>\'"]') as s:
        staging, prod = s.config.environment("staging"), s.config.environment("prod")
        await deploy(staging.migration_url, staging.migrations_dir)
        await _deploy_only(prod.migration_url, tmp_path, [INIT], migrations)
        await _sql(prod.migration_url, "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 300) g")
        await _backup(prod)
        await s.slash(ALICE, "prod")
        await s.click(ALICE, "rehearse")  # runs the verify_queries on the migrated copy too
        assert "Rehearsal of prod passed" in _replies(s, s.last_run_message())
        await s.click(CAROL, "approve")
        await s.click(DAVE, "approve")
        await s.tick_all(ALICE)
        await s.click(ALICE, "run")
        (view,) = s.slack.open_views(ALICE)
        await s.driver.submit_view(ALICE, view.id, {"confirm_input": {"value": "prod"}})
        await s.settle()
        text = s.text_of(s.last_run_message())
        assert "Succeeded" in text, text
        assert "`SELECT count(*) FROM users` → 300 (rehearsal of " in text and ": 300, the same)" in text
        assert "&lt;!channel&gt;" in text  # a query's result is data: escaped
        assert "ANALYZE users" in text
        conn = await asyncpg.connect(prod.migration_url)
        try:
            assert await conn.fetchval("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                                       "WHERE relname = 'users'")
        finally:
            await conn.close()
