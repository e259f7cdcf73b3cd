"""Socket Mode end to end (issue 13): the bot through slack-bolt's AsyncSocketModeHandler, as `migrabot serve`
runs it by default, against the stand-in's Socket Mode server (apps.connections.open, hello, envelopes
acked by envelope_id within 3 s, disconnect/refresh_requested and the reconnect, a redelivered event).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator.local_slack import LocalSlack
from bot.simulator.slack_requests import SlackDriver
from state import approvals, runs
from tests import pgserver
from tests.botstack import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    GROUP,
    USERS,
    BotStack,
    applied,
    bot_stack,
    make_config,
    wait_for,
    write_migrations,
)


@pytest.fixture
async def stack(tmp_path: Path, pg_server: pgserver.Server, database: str,
                prod_database: str) -> AsyncIterator[BotStack]:
    write_migrations(tmp_path / "migrations")
    config = make_config(tmp_path, pg_server.url_for(database), pg_server.url_for(prod_database))
    async with bot_stack(config, socket_mode=True) as s:
        yield s


def acks_in_time(s: BotStack) -> list[float]:
    envelopes = s.slack.socket.envelopes
    assert envelopes and all(e.acked for e in envelopes), [(e.type, e.acked) for e in envelopes]
    seconds = [e.ack_seconds or 0.0 for e in envelopes]
    assert max(seconds) < 3.0, seconds
    return seconds


async def test_a_command_and_clicks_over_socket_mode_run_a_migration(stack: BotStack) -> None:
    assert stack.slack.socket.hellos == 1
    assert [c.ok for c in stack.slack.calls_to("apps.connections.open")] == [True]
    answer = await stack.slash(ALICE, "staging")
    assert answer.status == 200
    msg = stack.last_run_message()
    assert "Migration: staging" in stack.text_of(msg)
    await stack.tick_all(ALICE)
    await stack.click(ALICE, "run")
    await wait_for(lambda: "Succeeded" in stack.text_of(stack.last_run_message()), timeout=60)
    assert await applied(stack.config.environment("staging").database_url) == [
        "20240101000000_init", "20240102000000_add_display_name"]
    types = {e.type for e in stack.slack.socket.envelopes}
    assert types == {"slash_commands", "interactive"}
    acks_in_time(stack)
    assert stack.all_payloads_valid() == []


async def test_a_reaction_over_socket_mode_and_its_redelivery_count_once(stack: BotStack) -> None:
    await stack.slash(ALICE, "prod")
    msg = stack.last_run_message()
    run = runs.by_message(stack.store, CHANNEL, msg.ts)
    assert run is not None
    await stack.driver.react(BOB, CHANNEL, msg.ts, "white_check_mark")
    await stack.settle()
    # Slack saw no ack in time (say) and sends the same envelope again: retry_attempt 1
    again = await stack.driver.react(BOB, CHANNEL, msg.ts, "white_check_mark", retry_num=1)
    await stack.settle()
    assert again is not None and again.status == 200
    events = [e for e in stack.slack.socket.envelopes if e.type == "events_api"]
    assert [e.retry_attempt for e in events] == [0, 1] and events[0].envelope_id == events[1].envelope_id
    votes = [v for v in approvals.live(stack.store, run["id"]) if v["user"] == BOB]
    assert len(votes) == 1, "the redelivered event is handled once"
    assert "Approvals* (1/2)" in stack.text_of(stack.last_run_message())
    acks_in_time(stack)


async def test_refresh_requested_reconnects_and_the_bot_keeps_answering(stack: BotStack) -> None:
    first = stack.slack.socket.connections[0]
    await stack.slack.socket.refresh()
    await wait_for(lambda: stack.slack.socket.hellos == 2 and len(stack.slack.socket.connections) == 1)
    assert first.ws.closed and stack.slack.socket.connections[0] is not first
    assert len(stack.slack.calls_to("apps.connections.open")) == 2, "a new URL for the new connection"
    await stack.slash(CAROL, "history staging")
    assert any("No runs on staging" in t or "Last runs" in t for t in stack.ephemerals_for(CAROL))
    acks_in_time(stack)


async def test_apps_connections_open_takes_only_the_app_token() -> None:
    async with LocalSlack(users=USERS) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
        with pytest.raises(SlackApiError) as refused:
            await client.apps_connections_open(app_token=slack.bot_token)
        assert refused.value.response["error"] == "not_allowed_token_type"
        url = (await client.apps_connections_open(app_token=slack.app_token))["url"]
        assert url.startswith("ws://127.0.0.1:") and "/link/?ticket=" in url and f"app_id={slack.app_id}" in url
        if client.session is not None:
            await client.session.close()


async def test_migrabot_serve_uses_socket_mode_against_the_stand_in(tmp_path: Path, pg_server: pgserver.Server,
                                                                    database: str, prod_database: str) -> None:
    """The real `migrabot serve` process (Socket Mode, its default) finds the stand-in through
    MIGRABOT_SLACK_API_URL, connects, and answers a command."""
    write_migrations(tmp_path / "migrations")
    config_path = tmp_path / "migrabot.toml"
    config = make_config(tmp_path, pg_server.url_for(database), pg_server.url_for(prod_database))
    staging = config.environment("staging")
    assert staging is not None
    config_path.write_text(f"""
[state]
path = "{tmp_path / 'serve-state.sqlite3'}"

[environments.staging]
database_url = "{staging.database_url}"
migrations_dir = "{tmp_path / 'migrations'}"
backup_dir = "{tmp_path / 'backups'}"
channel = "{CHANNEL}"
""")
    async with LocalSlack(users=USERS, channels={CHANNEL: "deploys"}, usergroups={GROUP: [CAROL]}) as slack:
        env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_APP_TOKEN": slack.app_token,
               "MIGRABOT_SLACK_API_URL": slack.base_url or ""}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--config", str(config_path), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            await slack.socket.wait_connected(timeout=30)
            driver = SlackDriver(None, "", slack, socket_mode=True)
            answer = await driver.slash(ALICE, "/migrate", "staging", CHANNEL)
            assert answer.status == 200
            await wait_for(lambda: any(m.blocks and m.blocks[0].get("type") == "header"
                                       for m in slack.messages(CHANNEL)), timeout=30)
            assert all(e.acked for e in slack.socket.envelopes)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
            except TimeoutError:
                proc.kill()
                output, _ = await proc.communicate()
        assert b"connected to Slack in Socket Mode" in output, output.decode(errors="replace")[-2000:]
