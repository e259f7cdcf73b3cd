"""The CLI starts in a blink: building the parser loads no database, HTTP or Slack client.

A user runs ``migrabot status`` dozens of times a day; each command imports its work when it
runs, so ``migrabot --version`` and ``--help`` never pay for asyncpg or aiohttp (issue 17).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("asyncpg", "aiohttp", "sqlite_utils", "slack_sdk", "slack_bolt", "apscheduler")


def _loaded_after(argv: list[str]) -> tuple[list[str], str]:
    """The heavy modules loaded once ``migrabot ARGV`` has parsed its arguments, and what it printed."""
    script = (
        "import contextlib, io, json, sys\n"
        "from bot.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps([[m for m in {HEAVY!r} if m in sys.modules], out.getvalue()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded, printed = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded, printed


def test_version_loads_no_database_http_or_slack_client() -> None:
    loaded, printed = _loaded_after(["--version"])
    assert printed.startswith("migrabot "), printed
    assert loaded == []


def test_help_lists_every_command_without_loading_their_work() -> None:
    loaded, printed = _loaded_after(["--help"])
    for command in ("status", "deploy", "resolve", "lint", "backup", "restore", "report", "health", "blockers",
                    "drift", "rehearse", "serve", "console", "check-config"):
        assert command in printed, f"{command} missing from --help"
    assert loaded == []


def test_a_command_help_is_complete_without_loading_its_work() -> None:
    loaded, printed = _loaded_after(["deploy", "--help"])
    for option in ("--dry-run", "--break-glass", "--no-backup", "--config", "--json"):
        assert option in printed, f"{option} missing from `deploy --help`"
    assert loaded == []


def test_the_status_command_loads_the_database_client_when_it_runs(tmp_path) -> None:
    """The work is imported when the command runs: asyncpg is there once `status` ran (against nothing)."""
    config = tmp_path / "migrabot.toml"
    config.write_text('[environments.dev]\ndatabase_url = "postgresql://nobody@127.0.0.1:1/none"\n'
                      f'migrations_dir = "{tmp_path}"\nconnect_timeout = "2s"\n')
    loaded, _ = _loaded_after(["status", "dev", "--config", str(config)])
    assert "asyncpg" in loaded and "aiohttp" not in loaded
