"""Every number in the configuration is bounded where it is read, and no file breaks the loader.

A value PostgreSQL would refuse (``lock_timeout`` above 2147483647 ms), one that silently means
"off" (``lock_timeout = 0``), ``inf``/``nan``, absurd counts, a file that is not UTF-8, values
nested thousands deep, a directory where a file is expected: each is one problem with its key
path from ``migrabot check-config``, never a traceback and never a run that fails later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import check_config, check_config_text

URL = 'database_url = "postgresql://app@db/app"'


def problems_of(extra: str, table: str = "[environments.dev]") -> list[str]:
    config, problems, _ = check_config_text(f"{table}\n{URL}\n{extra}\n", environ={})
    assert (config is None) == bool(problems)
    return [str(p) for p in problems]


@pytest.mark.parametrize(("line", "path", "words"), [
    # beyond what PostgreSQL accepts for a timeout setting (INT_MAX milliseconds)
    ('lock_timeout = "2147484s"', "environments.dev.lock_timeout", "2147483647 ms"),
    ('lock_timeout = "30d"', "environments.dev.lock_timeout", "2147483647 ms"),
    ('statement_timeout = "100000h"', "environments.dev.statement_timeout", "2147483647 ms"),
    ('connect_timeout = "999999999s"', "environments.dev.connect_timeout", "2147483647 ms"),
    ("lock_timeout = 99999999999999999", "environments.dev.lock_timeout", "2147483647 ms"),
    # zero (or what rounds to zero) turns the protection off
    ("lock_timeout = 0", "environments.dev.lock_timeout", "turns the timeout off"),
    ('lock_timeout = "0ms"', "environments.dev.lock_timeout", "turns the timeout off"),
    ("lock_timeout = 0.0001", "environments.dev.lock_timeout", "turns the timeout off"),
    ("connect_timeout = 0", "environments.dev.connect_timeout", "never connect"),
    ('statement_timeout = "0.1ms"', "environments.dev.statement_timeout", "at least 1 ms"),
    # not finite
    ("lock_timeout = inf", "environments.dev.lock_timeout", "finite"),
    ("lock_timeout = nan", "environments.dev.lock_timeout", "finite"),
    ("advisory_lock_timeout = inf", "environments.dev.advisory_lock_timeout", "finite"),
    ("approval_expiry = nan", "environments.dev.approval_expiry", "finite"),
    ("backup_free_margin = inf", "environments.dev.backup_free_margin", "finite"),
    ("backup_free_margin = nan", "environments.dev.backup_free_margin", "finite"),
    # other durations: bounded too (timers and dates overflow otherwise)
    ('approval_expiry = "99999999d"', "environments.dev.approval_expiry", "at most"),
    ("approval_expiry = 0", "environments.dev.approval_expiry", "at least"),
    ('approval_reminder = "99999999d"', "environments.dev.approval_reminder", "at most"),
    ('long_query_threshold = "99999999d"', "environments.dev.long_query_threshold", "at most"),
    ('advisory_lock_timeout = "99999999d"', "environments.dev.advisory_lock_timeout", "at most"),
    # counts and sizes
    ("required_approvals = 100000", "environments.dev.required_approvals", "at most"),
    ("backup_jobs = 100000", "environments.dev.backup_jobs", "at most"),
    ("backup_free_margin = 1e300", "environments.dev.backup_free_margin", "at most"),
    ("DB_POOL_MAX = 99999999999", "environments.dev.DB_POOL_MAX", "at most"),
    ("DB_POOL_IDLE_TIMEOUT = 99999999999", "environments.dev.DB_POOL_IDLE_TIMEOUT", "at most"),
])
def test_out_of_bounds_values_are_problems_with_their_key_path(line: str, path: str, words: str) -> None:
    problems = problems_of(line)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ") and words in problems[0], problems[0]


@pytest.mark.parametrize(("table", "line", "path"), [
    ("[environments.dev.retry]", "max_attempts = 99999999", "environments.dev.retry.max_attempts"),
    ("[environments.dev.retry]", "max_total = inf", "environments.dev.retry.max_total"),
    ("[environments.dev.retry]", 'max_delay = "99999999d"', "environments.dev.retry.max_delay"),
    ("[environments.dev.retention]", "keep_last = 99999999999", "environments.dev.retention.keep_last"),
    ("[environments.dev.retention]", "keep_days = nan", "environments.dev.retention.keep_days"),
    ("[environments.dev.retention]", "keep_days = inf", "environments.dev.retention.keep_days"),
])
def test_sub_tables_are_bounded_too(table: str, line: str, path: str) -> None:
    config, problems, _ = check_config_text(f"[environments.dev]\n{URL}\n{table}\n{line}\n", environ={})
    assert config is None and len(problems) == 1, problems
    assert str(problems[0]).startswith(f"{path}: ")


def test_the_limits_themselves_are_accepted() -> None:
    config, problems, _ = check_config_text(
        f'[environments.dev]\n{URL}\nlock_timeout = "2147483647ms"\nstatement_timeout = "1ms"\n'
        'connect_timeout = "1ms"\nrequired_approvals = 0\nbackup_free_margin = 1\n', environ={})
    assert problems == [] and config is not None
    env = config.environment("dev")
    assert env is not None and env.lock_timeout == 2147483.647 and env.statement_timeout == 0.001


def test_statement_timeout_off_still_means_off() -> None:
    for value in ('"off"', "0", "false"):
        config, problems, _ = check_config_text(f"[environments.dev]\n{URL}\nstatement_timeout = {value}\n",
                                                environ={})
        env = config.environment("dev") if config else None
        assert problems == [] and env is not None and env.statement_timeout is None


def test_bounds_apply_to_values_read_from_environment_variables() -> None:
    config, problems, _ = check_config_text(f'[environments.dev]\n{URL}\nlock_timeout = "env:LT"\n',
                                            environ={"LT": "3000000s"})
    assert config is None and [str(p).split(":")[0] for p in problems] == ["environments.dev.lock_timeout"]


# --- files that are not what they should be ----------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_file_that_is_not_utf8_is_one_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "migrabot.toml"
    path.write_bytes(f"# caf\xe9 (Latin-1)\n[environments.dev]\n{URL}\n".encode("latin-1"))
    config, problems, _ = check_config(path, environ={})
    assert config is None and len(problems) == 1
    assert "not UTF-8" in str(problems[0]) and "line 1" in str(problems[0])
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and out == "" and "Traceback" not in err and "not UTF-8" in err
    assert err.count("\n") == 1, "one sentence"
    # in a value: the problem carries that value's key path
    path.write_bytes(f'[environments.dev]\n{URL}\nchannel = "#caf\xe9"\n'.encode("latin-1"))
    _, problems, _ = check_config(path, environ={})
    assert [p.path for p in problems] == ["environments.dev.channel"] and "line 3" in str(problems[0])


def test_values_nested_too_deep_are_one_problem_with_the_key_path(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    deep = "[" * 5000 + "]" * 5000
    path = tmp_path / "migrabot.toml"
    path.write_text(f"[environments.dev]\n{URL}\naliases = {deep}\n")
    config, problems, _ = check_config(path, environ={})
    assert config is None and len(problems) == 1
    assert str(problems[0]).startswith("environments.dev.aliases: ") and "nested" in str(problems[0])
    code, _, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and "Traceback" not in err and "environments.dev.aliases" in err
    # inline tables nest too
    path.write_text(f"[environments.dev]\n{URL}\nchannel = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    config, problems, _ = check_config(path, environ={})
    assert config is None and str(problems[0]).startswith("environments.dev.channel: ")


def test_moderately_nested_values_are_a_type_problem_not_a_crash() -> None:
    problems = problems_of("aliases = " + "[" * 50 + "]" * 50)
    assert problems == ["environments.dev.aliases: expected a list of strings, got a list"]


def test_state_path_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state").mkdir()
    path = tmp_path / "migrabot.toml"
    path.write_text(f'[state]\npath = "state"\n[environments.dev]\n{URL}\n')
    config, problems, _ = check_config(path, environ={})
    assert config is None and len(problems) == 1
    assert str(problems[0]).startswith("state.path: ") and "is a directory" in str(problems[0])
    code, _, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and "state.path" in err and "Traceback" not in err


def test_folders_that_are_files(tmp_path: Path) -> None:
    (tmp_path / "migrations").write_text("not a folder")
    (tmp_path / "backups").write_text("not a folder")
    path = tmp_path / "migrabot.toml"
    path.write_text(f'[environments.dev]\n{URL}\nmigrations_dir = "migrations"\nbackup_dir = "backups"\n')
    _, problems, _ = check_config(path, environ={})
    assert sorted(str(p).split(":")[0] for p in problems) == ["environments.dev.backup_dir",
                                                              "environments.dev.migrations_dir"]
    assert all("not a folder" in str(p) for p in problems)


def test_config_option_naming_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check-config", "--config", str(tmp_path))
    assert code == 1 and "is a directory" in err and "does not exist" not in err
