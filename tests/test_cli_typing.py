"""The CLI as people type it: global options anywhere, paths from the current directory, quiet output.

* ``--config``, ``--json`` and ``-v`` work before or after the subcommand, in any mix, and the
  top-level ``--help`` lists them;
* ``--script`` and ``--config`` relative paths resolve from the current directory;
* a backup prints no warning from a library (platformdirs' "XDG_RUNTIME_DIR is not set");
* messages name the Slack command that exists (``/migrate``, never ``/deploy``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import CliError, build_parser, main
from tests.conftest import ROOT
from tests.engine_helpers import make_migrations


@pytest.fixture
def config(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);"})
    path = tmp_path / "migrabot.toml"
    path.write_text(f'[environments.prod]\ndatabase_url = "{database_url}"\nmigrations_dir = "{folder}"\n'
                    'backup_dir = "backups"\n')
    monkeypatch.delenv("MIGRABOT_CONFIG", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_global_options_before_or_after_the_subcommand(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--config", str(config), "status", "prod"],
                 ["status", "prod", "--config", str(config)],
                 ["-v", "--config", str(config), "status", "prod"],
                 ["--config", str(config), "status", "prod", "-v"]):
        code, out, err = _run(capsys, *argv)
        assert code == 1 and "prod: NOT up to date" in out, (argv, err)
    for argv in (["--json", "--config", str(config), "status", "prod"],
                 ["--config", str(config), "status", "prod", "--json", "-v"],
                 ["status", "--json", "prod", "--config", str(config)]):
        code, out, _ = _run(capsys, *argv)
        assert code == 1 and json.loads(out)["pending"] == ["01_a"], argv
    code, out, err = _run(capsys, "-v", "--config", str(config), "deploy", "prod", "--confirm", "prod")
    assert code == 0 and "01_a applied" in out, err


def test_verbose_before_the_subcommand_turns_on_logging(config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL", "MIGRABOT_LOG")}
    for argv in (["-v", "--config", str(config), "status", "prod"], ["status", "prod", "-v", "--config", str(config)]):
        result = subprocess.run([sys.executable, "-m", "bot", *argv], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 1 and " DEBUG " in result.stderr, (argv, result.stderr)
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "status", "prod"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert " DEBUG " not in result.stderr


def test_an_option_given_before_is_not_undone_by_the_subcommand_defaults(
        config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # the subcommand's own copy of --config/--json must not reset what was given before it
    args = build_parser().parse_args(["--config", "x.toml", "--json", "-v", "status", "prod"])
    assert args.config == "x.toml" and args.json is True and args.verbose is True
    args = build_parser().parse_args(["status", "prod"])
    assert args.config is None and args.json is False and args.verbose is False
    args = build_parser().parse_args(["--config", "a.toml", "status", "prod", "--config", "b.toml"])
    assert args.config == "b.toml", "the last one given wins, as usual"


def test_top_level_help_lists_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for option in ("--config FILE", "--json", "-v, --verbose"):
        assert option in out, option


def test_relative_paths_resolve_from_the_current_directory(config: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tour.txt").write_text("help\n")
    monkeypatch.chdir(elsewhere)
    code, _, err = _run(capsys, "--config", "../migrabot.toml", "status", "prod")
    assert code == 1, err
    # --script is read from where the user stands, whatever the process's directory becomes later
    from bot.cli.console_cmd import _lines

    args = build_parser().parse_args(["console", "--script", "tour.txt", "--config", "../migrabot.toml"])
    lines, source = _lines(args)
    assert lines is not None and [text for _, text in lines] == ["help"] and Path(source) == elsewhere / "tour.txt"
    # the README's `migrabot demo --script bot/demo/tour.txt` works outside a checkout: the packaged tour
    args = build_parser().parse_args(["demo", "--script", "bot/demo/tour.txt"])
    lines, source = _lines(args)
    assert lines and Path(source) == ROOT / "bot" / "demo" / "tour.txt"
    args = build_parser().parse_args(["console", "--script", "nowhere.txt"])
    with pytest.raises(CliError) as refused:
        _lines(args)
    assert str(elsewhere / "nowhere.txt") in str(refused.value)


def test_a_backup_prints_no_library_warning(config: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "MIGRABOT_CONFIG", "DATABASE_URL",
                                                            "PYTHONWARNINGS")}
    result = subprocess.run([sys.executable, "-m", "bot", "backup", "prod", "--config", str(config)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "XDG_RUNTIME_DIR" not in result.stderr, result.stderr


def test_cli_messages_name_the_slack_command_that_exists(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "deploy", "prod", "--config", str(config), "--confirm", "prod")
    assert code == 0 and "/deploy" not in err + out
    sources = "".join(p.read_text() for p in (ROOT / "bot" / "cli").glob("*.py"))
    assert "Slack /deploy" not in sources and "the Slack /deploy" not in sources
