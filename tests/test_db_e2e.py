"""`/db report|health|blockers` end to end: real HTTP, the Slack stand-in, real PostgreSQL (and pgBouncer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiohttp import web

from actions.report import IndexUsage, Report, TableSize
from bot import scheduler
from bot.render import reports
from bot.simulator.blockkit_check import check_message
from bot.simulator.local_slack import Message
from state import runs
from tests.botstack import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    DAVE,
    BotStack,
    StackFactory,
    wait_for,
    write_migrations,
)

if TYPE_CHECKING:
    from tests.pgbouncer_fixture import PgBouncer

pytest_plugins = ["tests.pgbouncer_fixture"]

SECRET = "hunter2-secret"


def posted(s: BotStack, needle: str) -> Message:
    """The newest top-level channel message whose text contains ``needle`` (current version)."""
    for m in reversed(s.slack.messages(CHANNEL)):
        current = s.slack.message(CHANNEL, m.ts) or m
        if needle in s.text_of(current) or needle in (current.text or ""):
            return current
    raise AssertionError(f"no message with {needle!r}: {[m.text for m in s.slack.messages(CHANNEL)]}")


def run_of(s: BotStack, msg: Message) -> dict[str, Any]:
    run = runs.by_message(s.store, CHANNEL, msg.ts)
    assert run is not None
    return run


# --- report -------------------------------------------------------------------------------------------


async def test_report_in_the_channel_with_tables_unused_indexes_states_and_long_queries(
        make_stack: StackFactory) -> None:
    async with make_stack(long_query_threshold='"200ms"') as s:
        url = s.config.environment("prod").database_url
        setup = await asyncpg.connect(url)
        await setup.execute("""
            CREATE TABLE "User" (id int PRIMARY KEY, name text, team int);
            CREATE INDEX "User_name_idx" ON "User"(name);
            CREATE INDEX "User_team_idx" ON "User"(team);
            INSERT INTO "User" SELECT g, 'n' || g, g % 10 FROM generate_series(1, 20000) g;
            CREATE TABLE small (id int);
            ANALYZE; SET enable_seqscan = off;""")
        await setup.fetch('SELECT * FROM "User" WHERE name = $1', "n5")
        await setup.close()  # a closing backend flushes its index statistics
        idle, in_tx, busy = [await asyncpg.connect(url) for _ in range(3)]
        sleeper = asyncio.ensure_future(busy.execute(f"SELECT pg_sleep(30) /* postgresql://a:{SECRET}@x/y */"))
        try:
            await in_tx.execute("BEGIN; SELECT 1")
            await asyncio.sleep(0.3)  # older than the 200ms threshold
            answer = await s.slash(ALICE, "report production", command="/db")
            assert answer.status == 200
            msg = posted(s, "Database report: prod")
            text = s.text_of(msg)
            assert s.slack.ephemerals(CHANNEL) == [], "the report is for the whole channel"
            assert "Largest tables" in text and "User" in text and " MB" in text
            assert text.index("User") < text.index("small")  # largest first
            unused = text[text.index("Never-used indexes"):]
            assert "User_team_idx" in unused and "User_name_idx" not in unused and "User_pkey" not in unused
            assert "idle in transaction" in text and "active" in text
            assert "pg_sleep" in text and SECRET not in str(msg.blocks)
            assert s.all_payloads_valid() == []
        finally:
            sleeper.cancel()
            for conn in (idle, in_tx, busy):
                conn.terminate()


def test_a_long_report_is_cut_to_slack_limits_with_n_more() -> None:
    many = [IndexUsage("public", f"table_with_a_rather_long_name_{i}", f"index_with_a_long_name_{i}_" + "x" * 40,
                       i, 8192 * i, "", False, False) for i in range(300)]
    report = Report(database="prod", database_bytes=10 ** 9, database_size="1 GB", server_version="15.4",
                    generated_at=datetime.now(UTC),
                    tables=[TableSize("public", f"t{i}_" + "y" * 100, 10 ** 6, "") for i in range(300)],
                    tables_more=700, indexes=many, unused_indexes=many, unused_indexes_more=5)
    text, blocks = reports.report_message("prod", report)
    assert check_message(blocks, text) == []
    joined = "\n".join(b["text"]["text"] for b in blocks if b.get("type") == "section")
    assert "more" in joined and "… 0 more" not in joined
    tables = next(b["text"]["text"] for b in blocks if "Largest tables" in b.get("text", {}).get("text", ""))
    shown = tables.count("\nt")
    assert f"… {300 - shown + 700} more" in tables  # rows cut for the section plus rows the query left out


async def test_a_database_that_cannot_be_reached_answers_the_person_only(make_stack: StackFactory) -> None:
    async with make_stack(staging_url=f"postgresql://app:{SECRET}@127.0.0.1:9/x") as s:
        await s.slash(ALICE, "report staging", command="/db")
        await s.slash(ALICE, "blockers staging", command="/db")
        (report_error, blockers_error) = s.ephemerals_for(ALICE)
        assert "cannot report on staging" in report_error and "cannot list the blockers" in blockers_error
        assert SECRET not in report_error + blockers_error
        assert s.slack.messages(CHANNEL) == []
        answer = await s.slash(ALICE, "report nowhere", command="/db")
        assert 'unknown environment "nowhere"' in answer.body["text"]


# --- blockers and terminate ---------------------------------------------------------------------------


class Chain:
    """A real lock chain: ``holder`` keeps an ACCESS EXCLUSIVE lock open, ``waiter`` waits for it."""

    def __init__(self, url: str, mode: str = "ACCESS EXCLUSIVE", waiter_sql: str = "SELECT * FROM t") -> None:
        self.url, self.mode, self.waiter_sql = url, mode, waiter_sql

    async def __aenter__(self) -> Chain:
        self.holder = await asyncpg.connect(self.url, server_settings={"application_name": "holder-app"})
        self.waiter = await asyncpg.connect(self.url)
        await self.holder.execute("CREATE TABLE IF NOT EXISTS t (id int)")
        # a password in the query text (a URL in a comment): the listing must not show it
        await self.holder.execute(f"BEGIN; LOCK TABLE t IN {self.mode} MODE /* postgresql://a:{SECRET}@x/y */")
        self.waiting = asyncio.ensure_future(self.waiter.fetch(self.waiter_sql))
        self.pid = self.holder.get_server_pid()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.waiting.cancel()
        self.holder.terminate()
        self.waiter.terminate()


async def show_blockers(s: BotStack, env: str) -> Message:
    for _ in range(50):  # the waiter shows up in pg_stat_activity within a few ms
        await s.slash(ALICE, f"blockers {env}", command="/db")
        msg = posted(s, "blockers")
        if "Terminate" in str(msg.blocks):
            return msg
        await asyncio.sleep(0.05)
    raise AssertionError("the lock chain never showed")


async def test_blockers_then_terminate_on_staging_runs_at_once(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        async with Chain(s.config.environment("staging").database_url) as chain:
            msg = await show_blockers(s, "staging")
            text = s.text_of(msg)
            assert f"pid *{chain.pid}*" in text and "holder-app" in text and "idle in transaction" in text
            assert "LOCK TABLE t" in text and SECRET not in str(msg.blocks)
            (button,) = [b["accessory"] for b in msg.blocks if b.get("accessory", {}).get("action_id")]
            assert button["confirm"]["confirm"]["text"] == "Terminate"  # Slack asks before the click counts

            await s.click(ALICE, "terminate_blocker", msg, value=f"staging:{chain.pid}")
            run_msg = posted(s, "Terminate a blocking session: staging")
            text = s.text_of(run_msg)
            assert "Succeeded" in text and f"pid {chain.pid} (user postgres) was terminated" in text
            assert await asyncio.wait_for(chain.waiting, timeout=5) == []  # the waiter got its rows
            assert run_of(s, run_msg)["status"] == "succeeded"
            await s.slash(ALICE, "blockers staging", command="/db")
            assert "No session is waiting" in posted(s, "lock in staging").text
        assert s.all_payloads_valid() == []


async def test_terminate_on_prod_waits_for_approvals_and_says_when_the_session_is_gone(
        make_stack: StackFactory) -> None:
    async with make_stack() as s:
        url = s.config.environment("prod").database_url
        async with Chain(url) as chain:
            msg = await show_blockers(s, "prod")
            await s.click(ALICE, "terminate_blocker", msg, value=f"prod:{chain.pid}")
            run_msg = posted(s, "Terminate a blocking session: prod")
            assert "Approvals* (0/2)" in s.text_of(run_msg) and "run" not in s.action_ids(run_msg)
            assert "Pre-migration checklist" not in s.text_of(run_msg)
            assert not chain.waiting.done(), "nothing is terminated before the approvals"
            await s.click(CAROL, "approve", run_msg)
            await s.click(DAVE, "approve", run_msg)
            run_msg = s.slack.message(CHANNEL, run_msg.ts)
            assert run_msg is not None and "run" in s.action_ids(run_msg)
            await s.click(ALICE, "run", run_msg)
            assert "was terminated" in s.text_of(s.slack.message(CHANNEL, run_msg.ts))  # type: ignore[arg-type]
            assert await asyncio.wait_for(chain.waiting, timeout=5) == []

        async with Chain(url) as chain:  # the environment's lock was released: a second one works
            msg = await show_blockers(s, "prod")
            await s.click(BOB, "terminate_blocker", msg, value=f"prod:{chain.pid}")
            run_msg = posted(s, "Terminate a blocking session: prod")
            assert f"*pid {chain.pid}*" in s.text_of(run_msg)
            await chain.holder.execute("COMMIT")  # the blocker finishes by itself while approvals come in
            await s.click(CAROL, "approve", run_msg)
            await s.click(DAVE, "approve", run_msg)
            await s.click(BOB, "run", s.slack.message(CHANNEL, run_msg.ts))
            text = s.text_of(s.slack.message(CHANNEL, run_msg.ts))  # type: ignore[arg-type]
            assert "Cancelled" in text and "no longer blocks anyone" in text and "nothing was terminated" in text
            assert await chain.holder.fetchval("SELECT 1") == 1  # untouched
        assert s.all_payloads_valid() == []


# --- health -------------------------------------------------------------------------------------------


@pytest.fixture
async def broken_app() -> AsyncIterator[str]:
    """An application whose /health answers 500."""
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="db down")

    app = web.Application()
    app.router.add_get("/health", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/health"
    await runner.cleanup()


async def test_health_with_a_failing_url_and_pgbouncer_down(make_stack: StackFactory, broken_app: str,
                                                            running_pgbouncer: PgBouncer) -> None:
    async with make_stack(health_url=f'"{broken_app}"', pgbouncer_admin_url=f'"{running_pgbouncer.admin_url}"',
                          health_cron='"0 6 * * *"') as s:
        running_pgbouncer.stop()
        try:
            await s.slash(ALICE, "health prod", command="/db")
            msg = posted(s, "Health of prod")
            text = s.text_of(msg)
            assert "Health of prod: FAIL" in text and "2 check(s) failed: health_url, pgbouncer" in text
            assert ":x: *health_url* — fail:" in text and "500" in text
            assert ":x: *pgbouncer* — fail:" in text and "unreachable" in text
            assert ":white_check_mark: *database* — pass" in text

            # the scheduled health check posts only when something fails
            before = len(s.slack.messages(CHANNEL))
            assert await s.wf.run(scheduler.watch_health(s.wf, s.config.environment("staging"))) is None  # warns only
            assert len(s.slack.messages(CHANNEL)) == before
            assert await s.wf.run(scheduler.watch_health(s.wf, s.config.environment("prod")))
            assert "scheduled health check" in s.text_of(s.slack.messages(CHANNEL)[-1])
        finally:
            running_pgbouncer.start()
        await s.slash(ALICE, "health staging", command="/db")
        assert "Health of staging: WARN" in s.text_of(posted(s, "Health of staging"))
        assert s.all_payloads_valid() == []


async def test_help_and_usage(make_stack: StackFactory) -> None:
    async with make_stack() as s:
        await s.slash(ALICE, "help", command="/db")
        assert "`/db blockers ENV`" in s.ephemerals_for(ALICE)[0]
        answer = await s.slash(ALICE, "vacuum prod", command="/db")
        assert 'unknown /db action "vacuum"' in answer.body["text"]


async def test_terminate_what_blocks_a_running_migration(tmp_path: Path, make_stack: StackFactory) -> None:
    """The runbook's "Migration Hangs": the running migration holds the environment's lock, Terminate still works."""
    async with make_stack() as s:
        write_migrations(tmp_path / "migrations", {"20240101000000_touch": 'ALTER TABLE "t" ADD COLUMN "x" int;'})
        for old in ("20240101000000_init", "20240102000000_add_display_name"):
            for f in (tmp_path / "migrations" / old).iterdir():
                f.unlink()
            (tmp_path / "migrations" / old).rmdir()
        # SHARE: the backup (pg_dump) may read the table; the application's writes queue behind the holder
        # (what `/db blockers` shows), and the ALTER TABLE waits for it without queueing (the thread says so)
        async with Chain(s.config.environment("staging").database_url, "SHARE", "INSERT INTO t VALUES (1)") as chain:
            await s.slash(ALICE, "staging")
            await s.tick_all(ALICE)
            migration = s.last_run_message()
            run_id = run_of(s, migration)["id"]
            await s.driver.click(ALICE, CHANNEL, migration.ts, "run")
            await wait_for(lambda: "retrying with backoff" in str(
                [r.text for r in (s.slack.message(CHANNEL, migration.ts) or migration).replies]), timeout=20)
            # no settle() while the migration runs (it waits for every task): poll the channel instead
            msg = None
            for _ in range(300):  # the writer shows up in pg_stat_activity within a few ms
                before = len(s.slack.messages(CHANNEL))
                await s.driver.slash(ALICE, "/db", "blockers staging", CHANNEL)
                await wait_for(lambda n=before: len(s.slack.messages(CHANNEL)) > n)
                if "terminate_blocker" in str(s.slack.messages(CHANNEL)[-1].blocks):
                    msg = s.slack.messages(CHANNEL)[-1]
                    break
                await asyncio.sleep(0.05)
            assert msg is not None, "the blocked writer never showed in /db blockers"
            assert f"blocked by pid {chain.pid}" in s.text_of(msg)
            await s.driver.click(ALICE, CHANNEL, msg.ts, "terminate_blocker", value=f"staging:{chain.pid}")
            run_msg = await wait_for(lambda: next((m for m in s.slack.messages(CHANNEL) if "was terminated" in
                                                   s.text_of(s.slack.message(CHANNEL, m.ts) or m)), None), timeout=60)
            assert "does not wait for that lock" in s.text_of(s.slack.message(CHANNEL, run_msg.ts) or run_msg)
            await wait_for(lambda: runs.get(s.store, run_id)["status"] != "running", timeout=30)
            await s.settle()
            assert runs.get(s.store, run_id)["status"] == "succeeded"
            retries = [r for r in s.slack.message(CHANNEL, migration.ts).replies if "retrying with backoff" in r.text]
            assert len(retries) == 1, "the thread hears about each blocker once, not on every retry"
            assert str(chain.pid) in str(retries[0].blocks)
        assert s.all_payloads_valid() == []
