"""A bot killed (SIGKILL) in the middle of a migration: after the restart the run is explained, never re-run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from actions.db import database_name
from bot.simulator.local_slack import LocalSlack
from bot.simulator.slack_requests import SlackDriver
from state import locks, runs
from state.store import open_store
from tests import pgserver
from tests.botstack import ALICE, CHANNEL, SECRET, USERS, applied, bot_stack, make_config, wait_for, write_migrations

MIGRATIONS = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_slow": 'SELECT pg_sleep(2);\nALTER TABLE "users" ADD COLUMN "nick" TEXT;',
    "20240103000000_more": 'ALTER TABLE "users" ADD COLUMN "bio" TEXT;',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    """A real `migrabot serve --http` process, its Slack stand-in and a driver, for one test."""

    proc: asyncio.subprocess.Process
    slack: LocalSlack
    driver: SlackDriver
    staging_url: str
    config: Any


@asynccontextmanager
async def served_bot(tmp_path: Path, staging_url: str, prod_url: str,
                     extra_env: dict[str, str] | None = None) -> AsyncIterator[Served]:
    write_migrations(tmp_path / "migrations", MIGRATIONS)
    config = make_config(tmp_path, staging_url, prod_url)
    config_file = tmp_path / "migrabot.toml"
    config_file.write_text(
        f'[state]\npath = "{config.state_path}"\n\n[environments.staging]\n'
        f'database_url = "{staging_url}"\n'
        f'migrations_dir = "{tmp_path / "migrations"}"\nbackup_dir = "{tmp_path / "backups"}"\n')
    slack = LocalSlack(users=USERS, channels={CHANNEL: "deploys"})
    base_url = await slack.start()
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SECRET,
           "MIGRABOT_SLACK_API_URL": base_url, **(extra_env or {})}
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
        "--config", str(config_file), env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = SlackDriver(f"http://127.0.0.1:{port}/slack/events", SECRET, slack)

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_for(healthy)
        yield Served(proc, slack, driver, staging_url, config)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await driver.close()
        log.close()
        await slack.stop()


async def start_slow_run(b: Served) -> str:
    """`/migrate staging`, tick, Run; returns the run message's ts once the slow migration executes."""
    slack, driver = b.slack, b.driver
    await driver.slash(ALICE, "/migrate", "staging", CHANNEL)
    # the checks come first; "Review" becomes an option once the SQL is all in the thread (paced for Slack)
    await wait_for(lambda: slack.messages(CHANNEL)
                   and "read the SQL in the thread, then tick" in str(slack.messages(CHANNEL)[0].blocks))
    msg = slack.messages(CHANNEL)[0]
    options = [o["value"] for b_ in msg.blocks if b_["type"] == "actions" for e in b_["elements"]
               if e["type"] == "checkboxes" for o in e["options"]]
    await driver.check(ALICE, CHANNEL, msg.ts, "checklist", options)
    await wait_for(lambda: "'action_id': 'run'" in str(slack.message(CHANNEL, msg.ts).blocks))
    await driver.click(ALICE, CHANNEL, msg.ts, "run")

    async def slow_one_running() -> bool:
        conn = await asyncpg.connect(b.staging_url)
        try:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%'"
                " AND pid <> pg_backend_pid() AND datname = current_database()"))  # not another test's look
        finally:
            await conn.close()

    await wait_for(slow_one_running)
    return msg.ts


async def test_killed_during_a_migration_is_examined_and_explained_after_restart(
        tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str) -> None:
    async with served_bot(tmp_path, pg_server.url_for(database), pg_server.url_for(prod_database)) as b:
        ts = await start_slow_run(b)
        b.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(b.proc.wait(), timeout=10)
        config, slack, staging_url = b.config, b.slack, b.staging_url

        # the killed bot left its run "running" in the state file
        store = open_store(config.state_path)
        (run,) = runs.open_runs(store, "staging")
        assert run["status"] == "running"
        store.close()

        async with bot_stack(config) as s2:
            s2.slack._channel_msgs, s2.slack._by_ts = slack._channel_msgs, slack._by_ts
            from bot.runs.recovery import recover

            assert await s2.wf.run(recover(s2.wf)) == [run["id"]]
            await s2.settle()
            text = s2.text_of(s2.slack.message(CHANNEL, ts))
            assert "Interrupted by a restart" in text, text
            assert "applied: 20240101000000_init" in text
            assert "nothing was re-run" in text
            assert locks.holder_of(s2.store, "staging") is None
        # never re-run: the third migration was not applied, the slow one is not applied twice
        await asyncio.sleep(2.5)  # the killed session's statement ends; its transaction rolls back
        assert "20240103000000_more" not in await applied(staging_url)


async def test_sigterm_lets_the_running_migration_finish_and_stops_before_the_next(
        tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str) -> None:
    async with served_bot(tmp_path, pg_server.url_for(database), pg_server.url_for(prod_database)) as b:
        ts = await start_slow_run(b)
        b.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.proc.wait(), timeout=30) == 0
        assert await applied(b.staging_url) == ["20240101000000_init", "20240102000000_slow"]
        conn = await asyncpg.connect(b.staging_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NULL") == 0
        finally:
            await conn.close()
        text = str(b.slack.message(CHANNEL, ts).blocks)
        assert "Aborted" in text and "20240102000000_slow" in text


async def test_recovery_explains_an_interrupted_restore_and_frees_stale_locks(make_stack: Any) -> None:
    from bot.runs.recovery import recover
    from state import steps

    async with make_stack() as s:
        env = s.config.environment("staging")
        db = database_name(env.database_url)
        conn = await asyncpg.connect(env.database_url)
        try:  # what a restore killed while filling its copy leaves behind
            await conn.execute(f'CREATE DATABASE "{db}__restore_20260101120000"')
        finally:
            await conn.close()
        rollback = runs.create(s.store, kind="rollback", env="staging", requested_by=ALICE, channel=CHANNEL,
                               plan={"target": "20260101_110000", "backups": []})
        locks.acquire(s.store, "staging", run_id=rollback, holder=ALICE)
        assert runs.transition(s.store, rollback, runs.RunStatus.RUNNING)
        steps.start(s.store, rollback, "restore", "Restore into a new database", position=0)
        ended = runs.create(s.store, kind="migrate", env="prod", requested_by=ALICE, channel=CHANNEL)
        assert runs.transition(s.store, ended, runs.RunStatus.RUNNING)
        assert runs.transition(s.store, ended, runs.RunStatus.SUCCEEDED)
        # a state file from before a run's end and its lock were one transaction: a lock left behind
        locks.acquire(s.store, "prod", run_id=ended, holder=ALICE)

        assert await s.wf.run(recover(s.wf)) == [rollback]
        await s.settle()
        run = runs.get(s.store, rollback)
        assert run["status"] == "interrupted"
        assert f"database {db} exists" in run["error"]
        assert f"{db}__restore_20260101120000" in run["error"] and "nothing was re-run" in run["error"]
        assert locks.holder_of(s.store, "staging") is None and locks.holder_of(s.store, "prod") is None
