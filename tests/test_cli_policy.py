"""One policy whatever the interface: `migrabot deploy` enforces what Slack enforces (issue 12, part 1).

Staging first, approvals, the typed confirmation and the verified backup hold in the CLI too;
``--run ID`` carries out a Slack run that was approved; ``--break-glass`` is the audited way round.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.cli import main
from bot.config import load_config
from state import audit, runs
from state.store import open_store
from tests import pgserver
from tests.botstack import BOB, CAROL, CHANNEL, DAVE, GROUP, applied, bot_stack, write_migrations


def write_config(tmp: Path, staging_url: str, prod_url: str, *, prod_extra: str = "") -> Path:
    path = tmp / "migrabot.toml"
    path.write_text(f"""
[state]
path = "{tmp / 'state.sqlite3'}"

[environments.staging]
database_url = "{staging_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"

[environments.prod]
database_url = "{prod_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
requires = ["staging"]
approvers = ["{BOB}", "{GROUP}"]
required_approvals = 2
{prod_extra}
""")
    return path


@pytest.fixture
def setup(tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    write_migrations(tmp_path / "migrations")
    for name in ("MIGRABOT_CONFIG", "SLACK_BOT_TOKEN", "MIGRABOT_SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    staging, prod = pg_server.url_for(database), pg_server.url_for(prod_database)
    return {"tmp": tmp_path, "staging": staging, "prod": prod, "config": write_config(tmp_path, staging, prod)}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def backups_of(tmp: Path, env: str) -> list[Path]:
    folder = tmp / "backups" / env
    return sorted(folder.iterdir()) if folder.exists() else []


def test_deploy_prod_refuses_without_approvals_and_staging(setup: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "deploy", "prod", "--config", str(setup["config"]), "--confirm", "prod")
    assert code == 2
    assert "prod requires 2 approvals" in err and "--run ID" in err and "--break-glass" in err
    assert "prod requires staging first" in err and "has not applied" in err
    assert asyncio.run(applied(setup["prod"])) == [] and backups_of(setup["tmp"], "prod") == []


def test_typed_confirmation_on_a_terminal_or_with_confirm(setup: dict[str, Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = setup["config"]
    config.write_text(config.read_text().replace("[environments.staging]",
                                                 "[environments.staging]\nconfirm_by_typing = true"))
    code, _, err = cli(capsys, "deploy", "staging", "--config", str(config))  # pytest's stdin is no terminal
    assert code == 2 and "--confirm staging" in err
    code, _, err = cli(capsys, "deploy", "staging", "--config", str(config), "--confirm", "stagin")
    assert code == 2 and "type staging exactly" in err and "nothing was done" in err
    assert asyncio.run(applied(setup["staging"])) == []
    code, out, err = cli(capsys, "deploy", "staging", "--config", str(config), "--confirm", "staging")
    assert code == 0, err
    assert len(asyncio.run(applied(setup["staging"]))) == 2 and len(backups_of(setup["tmp"], "staging")) == 1
    assert "Backup (pg_dump)" in out and "Verification" in out and "status clean" in out


def test_no_backup_only_where_the_policy_allows_it(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    config = setup["config"]
    code, _, err = cli(capsys, "deploy", "staging", "--config", str(config), "--no-backup")
    assert code == 2 and "does not allow runs without a verified backup" in err
    assert asyncio.run(applied(setup["staging"])) == []
    config.write_text(config.read_text().replace("[environments.staging]",
                                                 "[environments.staging]\nallow_no_backup = true"))
    code, out, err = cli(capsys, "deploy", "staging", "--config", str(config), "--no-backup")
    assert code == 0, err
    assert "skip Backup" in out and backups_of(setup["tmp"], "staging") == []


async def test_break_glass_runs_is_audited_and_announced(setup: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(setup["config"])
    async with bot_stack(config) as s:
        monkeypatch.setenv("SLACK_BOT_TOKEN", s.slack.bot_token)
        monkeypatch.setenv("MIGRABOT_SLACK_API_URL", await _api_url(s))
        code = await asyncio.to_thread(main, ["deploy", "prod", "--config", str(setup["config"]), "--confirm",
                                              "prod", "--break-glass", "incident 4711: the login table"])
        assert code == 0
        assert len(await applied(setup["prod"])) == 2 and len(backups_of(setup["tmp"], "prod")) == 1
        said = [m.text for m in s.slack.messages(CHANNEL)]
        assert any("Break-glass" in t and "incident 4711" in t and getpass.getuser() in t for t in said), said
    store = open_store(config.state_path)
    try:
        rows = audit.entries(store, env="prod")
    finally:
        store.close()
    glass = [r for r in rows if r["action"] == "break_glass"]
    assert glass and "incident 4711" in glass[0]["detail"] and getpass.getuser() in glass[0]["detail"]
    assert glass[0]["user"] == f"cli:{getpass.getuser()}"
    assert any(r["action"] == "cli_succeeded" for r in rows)


async def test_an_approved_slack_run_is_carried_out_by_the_cli(setup: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(setup["config"])
    assert await asyncio.to_thread(main, ["deploy", "staging", "--config", str(setup["config"])]) == 0
    async with bot_stack(config) as s:
        # prod's approvers include a user group: the CLI reads its members from Slack
        monkeypatch.setenv("SLACK_BOT_TOKEN", s.slack.bot_token)
        monkeypatch.setenv("MIGRABOT_SLACK_API_URL", await _api_url(s))
        await s.slash(BOB, "prod")
        msg = s.last_run_message()
        run_id = runs.open_runs(s.store, "prod")[0]["id"]
        # not yet approved: the CLI refuses that run too
        code = await asyncio.to_thread(main, ["deploy", "prod", "--config", str(setup["config"]), "--confirm",
                                              "prod", "--run", str(run_id)])
        assert code == 2 and await applied(setup["prod"]) == []
        await s.driver.react(CAROL, CHANNEL, msg.ts, "white_check_mark")
        await s.settle()
        await s.click(DAVE, "approve")
        await s.tick_all(BOB)
        code = await asyncio.to_thread(main, ["deploy", "prod", "--config", str(setup["config"]), "--confirm",
                                              "prod", "--run", str(run_id)])
        assert code == 0
        assert len(await applied(setup["prod"])) == 2
        run = runs.get(s.store, run_id)
        assert run is not None and run["status"] == "succeeded"
        assert runs.open_runs(s.store, "prod") == []  # its end freed prod


async def _api_url(s: Any) -> str:
    return str(s.wf.slack.client.base_url)


def take_backup_cli(capsys: pytest.CaptureFixture[str], config: Path, env: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "backup", env, "--json", "--config", str(config))
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def test_restore_refuses_a_backup_from_another_environment(setup: dict[str, Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config, tmp = setup["config"], setup["tmp"]
    prod_backup = take_backup_cli(capsys, config, "prod")
    (tmp / "backups" / "staging").mkdir(parents=True, exist_ok=True)
    shutil.copytree(prod_backup["path"], tmp / "backups" / "staging" / prod_backup["id"])  # a mix-up
    code, _, err = cli(capsys, "restore", "staging", prod_backup["id"], "--confirm", "RESTORE", "--config", str(config))
    assert code == 2 and "taken from another place" in err and "'prod' (not 'staging')" in err
    assert "--from-other-env" in err and "nothing was changed" in err
    code, _, err = cli(capsys, "restore", "staging", prod_backup["id"], "--confirm", "RESTORE", "--from-other-env",
                       "--config", str(config))
    assert code == 0, err
    assert "FROM ANOTHER PLACE" in err


def test_restore_says_whom_the_swap_disconnects_and_latest_is_never_a_snapshot(
        setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    config, tmp = setup["config"], setup["tmp"]
    regular = take_backup_cli(capsys, config, "staging")

    async def connect_app() -> asyncpg.Connection:
        return await asyncpg.connect(setup["staging"], server_settings={"application_name": "billing-api"})

    loop = asyncio.new_event_loop()
    app = loop.run_until_complete(connect_app())
    try:
        code, _, err = cli(capsys, "restore", "staging", regular["id"], "--confirm", "RESTORE", "--config",
                           str(config))
        assert code == 0, err
        assert "the swap ends 1 session (billing-api: 1)" in err
    finally:
        loop.run_until_complete(app.close(timeout=2))
        loop.close()
    snapshots = [p.name for p in backups_of(tmp, "staging") if p.name != regular["id"]]
    assert snapshots, "the restore took a safety snapshot, newer than the regular backup"
    time.sleep(1.1)  # the previous database is kept under a name with the second in it
    code, _, err = cli(capsys, "restore", "staging", "latest", "--confirm", "RESTORE", "--config", str(config))
    assert code == 0, err
    assert f"latest verified backup of staging: {regular['id']}" in err


async def test_the_restore_modal_names_the_sessions_and_another_origin(setup: dict[str, Any]) -> None:
    config = load_config(setup["config"])
    assert await asyncio.to_thread(main, ["backup", "prod", "--config", str(setup["config"])]) == 0
    (prod_backup,) = backups_of(setup["tmp"], "prod")
    shutil.copytree(prod_backup, setup["tmp"] / "backups" / "staging" / prod_backup.name)
    app = await asyncpg.connect(setup["staging"], server_settings={"application_name": "billing-api"})
    try:
        async with bot_stack(config) as s:
            await s.slash(BOB, "staging", command="/rollback")
            msg = s.last_run_message()
            await s.driver.select(BOB, CHANNEL, msg.ts, "choose_backup", prod_backup.name)
            await s.settle()
            assert "taken from another place" in s.text_of(s.last_run_message())
            await s.click(BOB, "run")
            (view,) = s.slack.open_views(BOB)
            shown = json.dumps(view.view)
            assert "The swap ends 1 session (billing-api: 1)" in shown
            assert "taken from another place" in shown and "Typing RESTORE puts that data into" in shown
    finally:
        await app.close(timeout=2)
