"""The CLI's first impressions: --version, check-config, and one clear sentence for every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot import __version__
from bot.cli import main
from tests.conftest import ROOT

EXAMPLE = ROOT / "migrabot.example.toml"
SECRET = "Sup3rS3cret"
EXAMPLE_ENV = {
    "STAGING_DATABASE_URL": f"postgresql://app:{SECRET}@stage-db:5432/twinship_staging",
    "DATABASE_URL": f"postgresql://app:{SECRET}@prod-db:6432/twinship_prod?pgbouncer=true",
    "DIRECT_DATABASE_URL": f"postgresql://app:{SECRET}@prod-db:5432/twinship_prod",
    "PGBOUNCER_ADMIN_URL": f"postgresql://pgbouncer:{SECRET}@prod-db:6432/pgbouncer",
}
BROKEN = '''
[environments.staging]
database_url = "env:MIGRABOT_TEST_UNSET_VAR"
[environments.prod]
aliases = ["production"]
database_url = "postgresql://app:Sup3rS3cret@db:notaport/prod"
required_approvals = "two"
requires = ["stagin"]
colour = "blue"
'''


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No configuration anywhere: an empty working directory and none of the variables set."""
    for name in ("MIGRABOT_CONFIG", "DATABASE_URL", "NODE_ENV", *EXAMPLE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"migrabot {__version__}"


def test_no_command_shows_help_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "check-config" in err


def test_check_config_prints_the_example_with_secrets_redacted(capsys, clean_env, monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "check-config", "--config", str(EXAMPLE))
    assert code == 0, err
    assert "[prod] (aliases: production)" in out
    assert "direct_url = postgresql://app:***@prod-db:5432/twinship_prod" in out
    assert SECRET not in out + err


def test_check_config_json_is_machine_readable(capsys, clean_env, monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-botTOKENvalue")
    code, out, _ = run(capsys, "check-config", "--config", str(EXAMPLE), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True
    assert data["config"]["environments"]["prod"]["required_approvals"] == 2
    assert data["slack_env"] == {"SLACK_BOT_TOKEN": True, "SLACK_APP_TOKEN": False, "SLACK_SIGNING_SECRET": False}
    assert SECRET not in out and "botTOKENvalue" not in out


def test_config_from_migrabot_config_variable(capsys, clean_env, monkeypatch):
    file = clean_env / "team.toml"
    file.write_text('[environments.qa]\ndatabase_url = "postgresql://app@db/qa"\n')
    monkeypatch.setenv("MIGRABOT_CONFIG", str(file))
    code, out, _ = run(capsys, "check-config")
    assert code == 0 and f"configuration from {file}: OK" in out


def test_runbook_variables_without_a_file(capsys, clean_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://user:{SECRET}@staging-host:5432/twinship_staging")
    monkeypatch.setenv("NODE_ENV", "staging")
    code, out, err = run(capsys, "check-config")
    assert code == 0 and "[staging]" in out
    assert SECRET not in out + err


def test_missing_configuration_says_what_to_do(capsys, clean_env):
    code, out, err = run(capsys, "check-config")
    assert code == 1 and out == ""
    assert err.count("\n") == 1, "one sentence"
    assert "copy migrabot.example.toml to migrabot.toml" in err and "DATABASE_URL" in err


def test_named_missing_file(capsys, clean_env):
    code, _, err = run(capsys, "check-config", "--config", "nowhere.toml")
    assert code == 1
    assert err.strip() == ("migrabot: configuration file nowhere.toml does not exist; "
                           "copy migrabot.example.toml there and edit it")


def test_broken_toml_names_the_line(capsys, clean_env):
    (clean_env / "migrabot.toml").write_text('[environments.prod]\ndatabase_url = "postgresql://a@b/c\n')
    code, _, err = run(capsys, "check-config")
    assert code == 1
    assert err.startswith("migrabot: not valid TOML:") and "line 2" in err


def test_broken_file_lists_every_problem_without_the_password(capsys, clean_env):
    (clean_env / "migrabot.toml").write_text(BROKEN)
    code, out, err = run(capsys, "check-config")
    assert code == 1 and out == ""
    assert "the configuration has 5 problem(s)" in err
    for line in ("environments.staging.database_url: environment variable MIGRABOT_TEST_UNSET_VAR is not set",
                 "environments.prod.database_url: malformed URL",
                 'environments.prod.required_approvals: expected an integer, got "two"',
                 'environments.prod.requires[0]: "stagin" names no environment',
                 "environments.prod.colour: unknown key"):
        assert f"  - {line}" in err
    assert SECRET not in err
    code, out, _ = run(capsys, "check-config", "--json")
    assert code == 1 and len(json.loads(out)["problems"]) == 5


def test_literal_password_warns_on_stderr(capsys, clean_env):
    (clean_env / "migrabot.toml").write_text(f'[environments.dev]\ndatabase_url = "postgresql://a:{SECRET}@db/dev"\n')
    code, out, err = run(capsys, "check-config")
    assert code == 0
    assert err.startswith("warning: environments.dev.database_url: the URL holds a literal password")
    assert SECRET not in out + err


def test_installed_entry_point_reports_user_errors_without_traceback(tmp_path):
    """The real ``python -m bot`` process: exit code, stderr, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "DATABASE_URL")}
    result = subprocess.run([sys.executable, "-m", "bot", "check-config", "--config", "gone.toml"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "gone.toml does not exist" in result.stderr
    result = subprocess.run([sys.executable, "-m", "bot", "no-such-command"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    ci = (ROOT / ".ci" / "run").read_text()
    [command] = [line.split("=", 1)[1].strip('"') for line in ci.splitlines() if line.startswith("TEST_COMMAND=")]
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{command}\n```" in readme
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_verbose_logging_of_the_cli_is_redacted(tmp_path):
    """Whatever a library logs under ``-v`` goes through the redacting filter the CLI installs."""
    code = (
        "import logging, sys\n"
        "from bot.cli import _setup_logging\n"
        "_setup_logging(True)\n"
        f"logging.getLogger('asyncpg.fake').debug('connecting to %s', 'postgresql://u:{SECRET}@db/x')\n"
        "try:\n"
        f"    raise OSError('cannot reach postgresql://u:{SECRET}@db/x')\n"
        "except OSError:\n"
        "    logging.getLogger('migrabot').exception('failed')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "DEBUG asyncpg.fake: connecting to postgresql://u:***@db/x" in result.stderr
    assert "OSError" in result.stderr and SECRET not in result.stderr


def test_every_command_the_readme_names_exists():
    """The README's runbook table only promises commands a user can run."""
    import argparse
    import re

    from bot.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    named = set(re.findall(r"`migrabot ([a-z][a-z-]+)", readme))
    missing = named - set(sub.choices)
    assert not missing, f"README.md names commands that do not exist: {sorted(missing)}"
