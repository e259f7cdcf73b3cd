"""`migrabot console`: the terminal renderer, a session against the real app, scripts, and the interactive prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Config, check_config_text
from bot.console.session import ConsoleSession
from bot.console.terminal_render import Names, TerminalRenderer
from bot.simulator.local_slack import Message
from tests.botstack import write_migrations

ROOT = Path(__file__).resolve().parent.parent
NAMES = Names(users={"U0ALICE": "alice", "U0BOB": "bob"}, groups={"S0DBA": "db-admins"},
              channels={"C0DEPLOYS": "deploys"})


# ---------------------------------------------------------------- renderer


def test_mrkdwn_reads_like_slack_shows_it() -> None:
    r = TerminalRenderer(NAMES)
    assert r.mrkdwn("*Approvals* (1/2) by <@U0BOB> and <!subteam^S0DBA>") == "*Approvals* (1/2) by @bob and @db-admins"
    assert r.mrkdwn("<@U0NOBODY|erin> in <#C0DEPLOYS> and <#C9|ops> <!here>") == "@erin in #deploys and #ops @here"
    assert r.mrkdwn(":white_check_mark: ok :x: no :hourglass_flowing_sand: :warning: :unknown_one:") == \
        "✔ ok ✘ no ⏳ ⚠ :unknown_one:"
    assert r.mrkdwn("at 14:00:00 UTC") == "at 14:00:00 UTC", "a time is not an emoji code"
    assert r.mrkdwn("see <https://x.example/runbook|the runbook> &amp; &lt;this&gt;") == \
        "see the runbook (https://x.example/runbook) & <this>"


def test_code_blocks_become_indented_lines() -> None:
    r = TerminalRenderer(NAMES)
    text = r.mrkdwn('*SQL*\n```ALTER TABLE "users"\n  ADD COLUMN "x" INT;```\ndone')
    assert text.splitlines() == ["*SQL*", '│ ALTER TABLE "users"', '│   ADD COLUMN "x" INT;', "done"]


def test_bold_turns_bold_with_color() -> None:
    r = TerminalRenderer(NAMES, color=True)
    assert r.mrkdwn("*Run* now") == "\x1b[1mRun\x1b[0m now"
    assert r.mrkdwn("2*3*4") == "2*3*4", "arithmetic is not bold"


def _run_message(ts: str, with_run: bool, ticked: list[str]) -> Message:
    options = [{"text": {"type": "plain_text", "text": t}, "value": v}
               for t, v in (("Review migration files", "review"), ("Downtime window", "downtime"))]
    checkboxes: dict = {"type": "checkboxes", "action_id": "checklist", "options": options}
    if ticked:
        checkboxes["initial_options"] = [o for o in options if o["value"] in ticked]
    buttons = [{"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_id": "approve",
                "value": "1", "style": "primary"}]
    if with_run:
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": ":rocket: Run"},
                        "action_id": "run", "value": "1"})
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Migration: prod"}, "block_id": "h"},
              {"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": "Requested by <@U0ALICE>"},
               "fields": [{"type": "mrkdwn", "text": "*Env*\nprod"}]},
              {"type": "actions", "block_id": "c", "elements": [checkboxes]},
              {"type": "actions", "block_id": "b", "elements": buttons},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": "Run #1 · prod"}]}]
    return Message(ts=ts, channel="C0DEPLOYS", user="U0BOT", text="Migration: prod", blocks=blocks, bot_id="B1",
                   reactions={"white_check_mark": ["U0BOB"]})


def test_elements_are_numbered_and_keep_their_numbers_across_updates() -> None:
    r = TerminalRenderer(NAMES)
    first = "\n".join(r.message(_run_message("1.0", False, []), tag="#1", heading="+"))
    assert "══ Migration: prod ══" in first and "Requested by @alice" in first and "*Env* prod" in first
    assert "[1] [ ] Review migration files" in first and "[2] [ ] Downtime window" in first
    assert "[3] (Approve ▸)" in first and "reactions: ✔ bob" in first
    assert {n: (t.kind, t.action_id, t.value) for n, t in r.targets.items()} == {
        1: ("checkbox", "checklist", "review"), 2: ("checkbox", "checklist", "downtime"),
        3: ("button", "approve", "1")}

    again = "\n".join(r.message(_run_message("1.0", True, ["review"]), tag="#1", heading="~ updated"))
    assert again.startswith("~ updated #1 migrabot")
    assert "[1] [x] Review migration files" in again and "[3] (Approve ▸)  [4] (» Run)" in again
    assert r.targets[1].selected and not r.targets[2].selected

    r.message(_run_message("1.0", False, []), tag="#1", heading="~ updated")
    assert 4 not in r.targets, "a button that left the message no longer answers to its number"
    other = "\n".join(r.message(_run_message("2.0", False, []), tag="#2", heading="+"))
    assert "[5] [ ] Review migration files" in other, "another message's elements get new numbers"


def test_ephemeral_messages_say_who_sees_them() -> None:
    r = TerminalRenderer(NAMES)
    msg = Message(ts="1.0", channel="C0DEPLOYS", user="U0BOT", text="only for <@U0ALICE>", bot_id="B1",
                  ephemeral_to="U0ALICE")
    assert r.message(msg, tag="#4", heading="+", viewer="U0ALICE")[0] == "+ #4 migrabot (only you)"
    assert r.message(msg, tag="#4", heading="+", viewer="U0BOB")[0] == "+ #4 migrabot (only @alice)"
    assert r.message(msg, tag="#4", heading="+", viewer="U0ALICE")[1] == "  only for @alice"


def test_modal_shows_its_field_and_how_to_submit() -> None:
    r = TerminalRenderer(NAMES)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Confirm"},
            "submit": {"type": "plain_text", "text": "Run"},
            "blocks": [{"type": "input", "block_id": "confirm_input", "label": {"type": "plain_text",
                        "text": "Type prod"}, "element": {"type": "plain_text_input", "action_id": "value"}},
                       {"type": "actions", "block_id": "m", "elements": [
                           {"type": "static_select", "action_id": "when", "placeholder": {
                               "type": "plain_text", "text": "When"}, "options": [
                               {"text": {"type": "plain_text", "text": "Now"}, "value": "now"},
                               {"text": {"type": "plain_text", "text": "Tonight"}, "value": "night"}]}]}]}
    lines = r.view(view, "V1", heading="+", user="U0BOB")
    assert lines[0] == "+ modal for @bob: ┌ Confirm ┐"
    assert "  [1] Type prod: ________" in lines and "  [2] ▾ When: 1) Now  2) Tonight" in lines
    assert lines[-1] == "  `submit` (Run)  `cancel` (Cancel)"
    assert r.targets[1].kind == "input" and r.targets[2].options == [("now", "Now"), ("night", "Tonight")]


# ---------------------------------------------------------------- a session against the real app


def _config(tmp: Path, url: str, prod_url: str | None = None) -> Config:
    write_migrations(tmp / "migrations")
    prod = "" if prod_url is None else f"""
[environments.prod]
database_url = "{prod_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "#deploys"
approvers = ["U0BOB", "S0DBADMINS"]
required_approvals = 2
"""
    text = f"""
[state]
path = "{tmp / 'state.sqlite3'}"

[environments.staging]
database_url = "{url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "#deploys"
lock_timeout = "300ms"
{prod}"""
    (tmp / "migrabot.toml").write_text(text)
    config, problems, _ = check_config_text(text, environ={}, base_dir=tmp)
    assert config is not None, problems
    return config


@pytest.fixture
async def session(tmp_path: Path, database_url: str) -> AsyncIterator[ConsoleSession]:
    s = ConsoleSession(_config(tmp_path, database_url, prod_url=database_url))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def test_session_people_and_channel_come_from_the_config(session: ConsoleSession) -> None:
    assert session.channel == "C0DEPLOYS" and session.channels == {"C0DEPLOYS": "deploys"}
    assert session.people.groups == {"S0DBADMINS": ["U0CAROL", "U0DAVE"]}
    out = (await session.run_line("users")).output
    assert "* @alice (U0ALICE)" in out and "@dbadmins (S0DBADMINS): @carol, @dave" in out
    result = await session.run_line("/as nobody")
    assert not result.ok and 'no user "nobody"' in result.output
    assert (await session.run_line("user erin")).ok and (await session.run_line("/as erin")).ok
    assert session.user == "U0ERIN"


async def test_updates_are_marked_and_deleted_messages_lose_their_numbers(session: ConsoleSession) -> None:
    assert session.slack is not None
    client = AsyncWebClient(token=session.slack.bot_token, base_url=session.slack.base_url)
    blocks = [{"type": "actions", "elements": [{"type": "button", "action_id": "go", "value": "1",
                                                "text": {"type": "plain_text", "text": "Go"}}]}]
    posted = await client.chat_postMessage(channel="C0DEPLOYS", text="hello <@U0BOB>", blocks=blocks)
    await client.chat_postMessage(channel="C0DEPLOYS", text="a reply", thread_ts=posted["ts"])
    changes, errors = session.render_changes()
    assert changes.splitlines()[:2] == ["+ #1 migrabot", "  [1] (Go)"] and errors == []
    assert "    + #2 ↳ in thread of #1 migrabot" in changes.splitlines()
    await client.chat_update(channel="C0DEPLOYS", ts=posted["ts"], text="bye", blocks=[])
    changes, _ = session.render_changes()
    assert changes.splitlines()[:2] == ["~ updated #1 migrabot", "  bye"]
    result = await session.run_line("click 1")
    assert not result.ok and "no button or option [1]" in result.output
    await client.chat_delete(channel="C0DEPLOYS", ts=posted["ts"])
    assert session.render_changes()[0] == "- deleted #1"


async def test_migrate_staging_tick_run_and_a_slack_rejection(session: ConsoleSession, database_url: str) -> None:
    first = await session.run_line("/migrate staging")
    assert first.ok, first.output
    assert "══ Migration: staging ══" in first.output and "[1] [ ] Review migration files" in first.output
    ticked = await session.run_line("tick all")
    assert ticked.ok and "[1] [x] Review migration files" in ticked.output and "~ updated #1" in ticked.output
    untick = await session.run_line("tick 1")
    assert "[1] [ ] Review migration files" in untick.output, "tick toggles"
    await session.run_line("tick 1")
    ran = await session.run_line("click Run")
    assert ran.ok and "Succeeded" in ran.output, ran.output
    assert (await session.run_line("expect Succeeded")).ok
    assert not (await session.run_line("expect no such text")).ok
    bad = await session.run_line("/nosuchcommand")
    assert not bad.ok and "dispatch_failed" in bad.output, "a request Slack would show as failed fails the line"


async def test_prod_approval_by_another_user_and_reaction(session: ConsoleSession) -> None:
    await session.run_line("/migrate prod")
    refused = await session.run_line("click Approve")
    assert "(only you)" in refused.output and "not an approver" in refused.output
    await session.run_line("/as bob")
    assert "Approvals* (1/2)" in (await session.run_line("click Approve")).output
    await session.run_line("/as dave")
    reacted = await session.run_line("react last :white_check_mark:")
    assert "Approvals* (2/2)" in reacted.output and "reactions: ✔ dave" in reacted.output
    assert not (await session.run_line("react 99 :x:")).ok


# ---------------------------------------------------------------- the command line


def _cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_script_prints_a_transcript_and_fails_on_a_bad_line(tmp_path: Path, database_url: str) -> None:
    _config(tmp_path, database_url)
    script = tmp_path / "s.txt"
    script.write_text("# comment\n\n/migrate help\nclick 42\n/migrate staging\n")
    done = _cli("console", "--config", str(tmp_path / "migrabot.toml"), "--script", str(script))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "alice> /migrate help\n" in done.stdout and "alice> click 42\n" in done.stdout
    assert "no button or option [42]" in done.stdout and "stopped at" in done.stdout and "line 4" in done.stdout
    assert "/migrate staging" not in done.stdout, "a script stops at the first line that fails"
    assert "Traceback" not in done.stderr

    ok = _cli("console", "--config", str(tmp_path / "migrabot.toml"), "--user", "bob",
              stdin="help\n/migrate help\nquit\nnever run\n")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bob> help" in ok.stdout and "tick N" in ok.stdout and "never run" not in ok.stdout

    unknown = _cli("console", "--config", str(tmp_path / "migrabot.toml"), "--keep-going", stdin="frobnicate\nhelp\n")
    assert unknown.returncode == 1 and 'unknown command "frobnicate"' in unknown.stdout
    assert "1 line(s) could not be acted on: line 1" in unknown.stdout
    nobody = _cli("console", "--config", str(tmp_path / "migrabot.toml"), "--user", "zed", stdin="")
    assert nobody.returncode == 2 and 'no user "zed"' in nobody.stderr


def test_interactive_console_in_a_terminal(tmp_path: Path, database_url: str) -> None:
    _config(tmp_path, database_url)
    env = {**os.environ, "NO_COLOR": "1", "HOME": str(tmp_path)}
    child = pexpect.spawn(sys.executable, ["-m", "bot", "console", "--config", str(tmp_path / "migrabot.toml")],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    try:
        child.expect("type \"help\"")
        child.expect_exact("alice> ")
        child.sendline("/migrate staging")
        child.expect_exact("══ Migration: staging ══")
        child.expect_exact("[1] [ ] Review migration files")
        child.expect_exact("alice> ")
        child.sendline("tick 1")
        child.expect_exact("~ updated #1")
        child.expect_exact("[1] [x] Review migration files")
        child.expect_exact("alice> ")
        child.sendline("click 999")
        child.expect_exact("no button or option [999]")
        child.expect_exact("alice> ")
        child.sendline("/as bob")
        child.expect_exact("bob> ")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "quit" in (tmp_path / ".migrabot_console_history").read_text(), "readline history is kept"


def test_ctrl_c_leaves_cleanly(tmp_path: Path, database_url: str) -> None:
    _config(tmp_path, database_url)
    env = {**os.environ, "NO_COLOR": "1", "HOME": str(tmp_path)}
    child = pexpect.spawn(sys.executable, ["-m", "bot", "console", "--config", str(tmp_path / "migrabot.toml")],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact("alice> ")
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130


async def test_the_console_can_reach_the_bot_over_socket_mode(tmp_path: Path, database_url: str) -> None:
    s = ConsoleSession(_config(tmp_path, database_url, prod_url=database_url), socket_mode=True)
    await s.start()
    try:
        first = await s.run_line("/migrate staging")
        assert first.ok, first.output
        assert "══ Migration: staging ══" in first.output
        ticked = await s.run_line("tick all")
        assert ticked.ok and "[1] [x] Review migration files" in ticked.output
        assert s.slack is not None and s.slack.socket.hellos == 1
        assert {e.type for e in s.slack.socket.envelopes} == {"slash_commands", "interactive"}
        assert all(e.acked for e in s.slack.socket.envelopes)
    finally:
        await s.close()
