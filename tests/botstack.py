"""The whole bot over real HTTP for end-to-end tests.

A real migrabot ``AsyncApp`` served on a free port, its Web API client pointed at
:class:`bot.simulator.local_slack.LocalSlack`, driven by :class:`bot.simulator.slack_requests.SlackDriver`
with real request signing; staging and prod are real PostgreSQL databases.
"""

from __future__ import annotations

import asyncio
import inspect
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import build_app, http_application
from bot.config import Config, check_config_text
from bot.simulator.blockkit_check import check_message, check_view
from bot.simulator.local_slack import LocalSlack, Message, RateLimits
from bot.simulator.slack_requests import SlackDriver
from bot.workflow import Workflow
from state.store import Store, open_store

SECRET = "e2e-signing-secret-abcdef0123456789"
CHANNEL = "C0DEPLOYS"
USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
ALICE, BOB, CAROL, DAVE = USERS
GROUP = "S0DBADMINS"

MIGRATIONS = {
    "20240101000000_init": """\
        -- CreateTable
        CREATE TABLE "users" (
            "id" SERIAL NOT NULL,
            "email" TEXT NOT NULL,
            CONSTRAINT "users_pkey" PRIMARY KEY ("id")
        );
        """,
    "20240102000000_add_display_name": """\
        ALTER TABLE "users" ADD COLUMN "display_name" VARCHAR(255);
        """,
}


def write_migrations(folder: Path, migrations: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "migration_lock.toml").write_text('# Prisma\nprovider = "postgresql"\n')
    for name, sql in (migrations or MIGRATIONS).items():
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "migration.sql").write_text(textwrap.dedent(sql))
    return folder


def make_config(tmp: Path, staging_url: str, prod_url: str, **prod_extra: Any) -> Config:
    extra = "".join(f"{k} = {v}\n" for k, v in prod_extra.items())
    text = f"""
[state]
path = "{tmp / 'state.sqlite3'}"

[environments.staging]
database_url = "{staging_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
lock_timeout = "300ms"

[environments.prod]
aliases = ["production"]
database_url = "{prod_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
requires = ["staging"]
approvers = ["{BOB}", "{GROUP}"]
required_approvals = 2
lock_timeout = "300ms"
{extra}"""
    config, problems, _ = check_config_text(text, environ={}, base_dir=tmp)
    assert config is not None, problems
    return config


@dataclass
class BotStack:
    slack: LocalSlack
    driver: SlackDriver
    wf: Workflow
    config: Config
    store: Store
    url: str  # "" over Socket Mode
    runner: web.AppRunner | None  # None over Socket Mode
    socket_handler: Any = None  # slack-bolt's AsyncSocketModeHandler, over Socket Mode

    async def settle(self) -> None:
        """Wait until the bot has finished everything the last request started."""
        for _ in range(3):
            await asyncio.sleep(0.02)
            await self.wf.settle(timeout=120)
            await self.slack.wait_idle(quiet=0.05, timeout=30)
        await self.wf.settle(timeout=120)

    async def slash(self, user: str, text: str, command: str = "/migrate", **kw: Any) -> Any:
        answer = await self.driver.slash(user, command, text, CHANNEL, **kw)
        await self.settle()
        return answer

    def run_messages(self) -> list[Message]:
        """Top-level bot messages in the channel that are run messages (they have a header)."""
        return [m for m in self.slack.messages(CHANNEL)
                if m.blocks and m.blocks[0].get("type") == "header"]

    def last_run_message(self) -> Message:
        msgs = self.run_messages()
        assert msgs, "no run message was posted"
        return self.slack.message(CHANNEL, msgs[-1].ts) or msgs[-1]

    def text_of(self, msg: Message) -> str:
        parts = []
        for b in msg.blocks:
            if b.get("text"):
                parts.append(b["text"]["text"])
            for f in b.get("fields", []):
                parts.append(f["text"])
            for e in b.get("elements", []):
                if isinstance(e, dict) and e.get("type") in ("mrkdwn", "plain_text"):
                    parts.append(e["text"])
                elif isinstance(e, dict) and e.get("text", {}).get("text"):
                    parts.append(e["text"]["text"])
        return "\n".join(parts)

    def action_ids(self, msg: Message) -> list[str]:
        return [e.get("action_id") for b in msg.blocks if b.get("type") == "actions" for e in b["elements"]]

    def ephemerals_for(self, user: str) -> list[str]:
        return [m.text for m in self.slack.ephemerals(CHANNEL, user)]

    async def click(self, user: str, action_id: str, msg: Message | None = None, **kw: Any) -> Any:
        msg = msg or self.last_run_message()
        answer = await self.driver.click(user, CHANNEL, msg.ts, action_id, **kw)
        await self.settle()
        return answer

    async def tick_all(self, user: str, msg: Message | None = None) -> None:
        msg = msg or self.last_run_message()
        values = [o["value"] for b in msg.blocks if b.get("type") == "actions"
                  for e in b["elements"] if e.get("type") == "checkboxes" for o in e["options"]]
        await self.driver.check(user, CHANNEL, msg.ts, "checklist", values)
        await self.settle()

    def all_payloads_valid(self) -> list[str]:
        """Every message and modal the bot sent, checked again against Block Kit's limits."""
        problems = []
        for call in self.slack.calls:
            if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
                problems += check_message(call.args.get("blocks"), call.args.get("text"))
            elif call.method in ("views.open", "views.update", "views.push"):
                problems += check_view(call.args.get("view") or {})
        problems += [f"{c.method}: {c.error}" for c in self.slack.errors()]
        return problems


#: Slack's rate limits at a tenth of their windows (posting: a burst of 3, then 10 per second per
#: channel), and the bot's pacing scaled the same way, so the end-to-end tests stay fast.
TIME_FACTOR = 0.1


@asynccontextmanager
async def bot_stack(config: Config, *, store_path: Path | None = None, pace: bool = True,
                    check_mentions: bool = True, socket_mode: bool = False,
                    time_factor: float = TIME_FACTOR) -> AsyncIterator[BotStack]:
    """The whole bot against the stand-in, over signed HTTP or (``socket_mode``) over Slack's Socket
    Mode protocol through slack-bolt's own AsyncSocketModeHandler, as ``migrabot serve`` runs it.

    On a clean exit, no ``<!here>``-like sequence may have come from data
    (:meth:`LocalSlack.stray_mentions`)."""
    slack = LocalSlack(users=USERS, channels={CHANNEL: "deploys"}, usergroups={GROUP: [CAROL, DAVE]},
                       rate_limits=RateLimits(time_factor=time_factor))
    base_url = await slack.start()
    store = open_store(store_path or config.state_path)
    app, wf = build_app(config, store, token=slack.bot_token, signing_secret=None if socket_mode else SECRET,
                        api_url=base_url, update_interval=0.0, post_rate=(1 / time_factor) if pace else 0.0)
    runner: web.AppRunner | None = None
    handler: Any = None
    if socket_mode:
        handler = AsyncSocketModeHandler(app, slack.app_token)
        await handler.connect_async()
        await slack.socket.wait_connected()
        url = ""
        driver = SlackDriver(None, SECRET, slack, socket_mode=True)
    else:
        runner = web.AppRunner(http_application(app, wf), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        driver = SlackDriver(url, SECRET, slack)
    try:
        yield BotStack(slack, driver, wf, config, store, url, runner, handler)
        if check_mentions:
            stray = slack.stray_mentions()
            assert not stray, f"text from data reached Slack unescaped: {stray[:5]}"
    finally:
        await wf.close()
        await driver.close()
        if handler is not None:
            await handler.close_async()
        if runner is not None:
            await runner.cleanup()
        await slack.stop()
        store.close()


StackFactory = Callable[..., AbstractAsyncContextManager[BotStack]]


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def applied(url: str) -> list[str]:
    """Names of the migrations ``_prisma_migrations`` records as applied, in name order."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('_prisma_migrations') IS NOT NULL"):
            return []
        rows = await conn.fetch("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
                                "AND rolled_back_at IS NULL ORDER BY migration_name")
        return [r[0] for r in rows]
    finally:
        await conn.close()
