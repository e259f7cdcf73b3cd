"""Lint: the runbook's risky operations are flagged with its alternative, its safe examples pass."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actions.errors import ActionError
from actions.lint import DEFAULT_EXCLUDE, lint_folder, lint_migrations, lint_sql
from actions.squawk import SquawkRun, start_squawk
from bot.cli import COMMANDS, CONFIG_FILE, build_parser, command_word, main
from bot.config import DEFAULT_CONFIG_PATH

# One migration per item of the runbook's "Risky Operations" list (and the index/constraint items
# its safe list implies), on an existing table "users".
RISKY = [
    ("drop-column", 'ALTER TABLE "users" DROP COLUMN "name";', "expand-contract"),
    ("rename-column", 'ALTER TABLE "users" RENAME COLUMN "name" TO "display_name";', "expand-contract"),
    ("change-column-type", 'ALTER TABLE "users" ALTER COLUMN "age" SET DATA TYPE BIGINT;', "expand-contract"),
    ("set-not-null", 'ALTER TABLE "users" ALTER COLUMN "email" SET NOT NULL;', "expand-contract"),
    ("index-not-concurrent", 'CREATE INDEX "users_email_idx" ON "users"("email");', "CREATE INDEX CONCURRENTLY"),
    ("index-not-concurrent", 'CREATE UNIQUE INDEX "users_email_key" ON "users"("email");', "CONCURRENTLY"),
    ("constraint-not-valid", "ALTER TABLE users ADD CONSTRAINT age_positive CHECK (age > 0);", "NOT VALID"),
    ("constraint-not-valid", 'ALTER TABLE "users" ADD CONSTRAINT "users_team_fkey" FOREIGN KEY ("team_id") '
                             'REFERENCES "team"("id") ON DELETE CASCADE;', "VALIDATE CONSTRAINT"),
    ("constraint-not-valid", "ALTER TABLE users ADD CONSTRAINT users_email_uq UNIQUE (email);", "USING INDEX"),
]

# The runbook's own safe SQL snippets.
SAFE = [
    "ALTER TABLE users ADD COLUMN display_name VARCHAR(255);",
    "CREATE INDEX CONCURRENTLY idx_users_email ON users(email_normalized);",
    "ALTER TABLE users ADD CONSTRAINT email_lower CHECK (email = lower(email)) NOT VALID;",
    "ALTER TABLE users VALIDATE CONSTRAINT email_lower;",
    'CREATE TABLE "new_feature_table" ("id" TEXT NOT NULL, "created_at" TIMESTAMP(3) NOT NULL DEFAULT '
    'CURRENT_TIMESTAMP, CONSTRAINT "new_feature_table_pkey" PRIMARY KEY ("id"));',
]


@pytest.mark.parametrize(("category", "sql", "advice"), RISKY, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(RISKY)])
def test_each_risky_operation_is_risky_with_the_runbooks_alternative(category: str, sql: str, advice: str) -> None:
    result = lint_sql("20240101000000_change", "-- a Prisma comment\n" + sql)
    assert result.verdict == "risky"
    finding = next(f for f in result.findings if f.category == category)
    assert advice.lower() in finding.advice.lower()
    assert finding.line == 2 and finding.statement.startswith(sql.split()[0])


@pytest.mark.parametrize("sql", SAFE)
def test_runbook_safe_examples_are_safe(sql: str) -> None:
    result = lint_sql("20240101000000_safe", sql)
    assert result.verdict == "safe", result.findings
    assert result.notes  # the safe operation is recognised, not just unflagged


def test_the_runbook_expand_contract_sequence_is_safe_until_the_contract_step() -> None:
    report = lint_migrations([
        ("1_expand", "ALTER TABLE users ADD COLUMN display_name VARCHAR(255);"),
        ("2_backfill", "UPDATE users SET display_name = name WHERE display_name IS NULL;"),
        ("3_contract", "ALTER TABLE users DROP COLUMN name;"),
    ])
    assert [m.verdict for m in report.migrations] == ["safe", "safe", "risky"]
    assert not report.zero_downtime_safe
    assert report.to_dict()["migrations"][2]["findings"][0]["category"] == "drop-column"


def test_index_and_constraints_on_a_table_created_in_the_same_migration_are_safe() -> None:
    sql = """
CREATE TABLE "team" ("id" UUID NOT NULL, "name" VARCHAR(50) NOT NULL, CONSTRAINT "team_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "team_name_key" ON "team"("name");
ALTER TABLE "team" ADD CONSTRAINT "team_name_check" CHECK (length("name") > 0);
ALTER TABLE "team" ADD CONSTRAINT "team_owner_fkey" FOREIGN KEY ("id") REFERENCES "users"("id");
CREATE INDEX "users_team_idx" ON "users"("team_id");
"""
    result = lint_sql("init", sql)
    assert [(f.category, f.line) for f in result.findings if f.risky] == [("index-not-concurrent", 6)]


def test_concurrently_with_other_statements_warns_about_prismas_transaction() -> None:
    result = lint_sql("m", "CREATE INDEX CONCURRENTLY i ON users(email);\nALTER TABLE users ADD COLUMN x TEXT;")
    assert result.verdict == "safe"
    assert [f.category for f in result.findings] == ["concurrently-in-transaction"]


def test_unparsable_sql_falls_back_to_migrabots_own_detection() -> None:
    sql = "ALTER TABLE users DROP COLUMN name;\nSELEC oops;\nALTER TABLE users ALTER COLUMN a DROP DEFAULT;"
    result = lint_sql("broken", sql)
    categories = [f.category for f in result.findings]
    assert "syntax" in categories and "drop-column" in categories
    assert categories.count("drop-column") == 1  # DROP DEFAULT is not a dropped column
    assert next(f for f in result.findings if f.category == "drop-column").rule == "migrabot:drop-column"


def test_exclude_list() -> None:
    sql = "ALTER TABLE users ADD COLUMN display_name VARCHAR(255);\nALTER TABLE users DROP COLUMN name;"
    assert lint_sql("m", sql).verdict == "risky"
    assert lint_sql("m", sql, exclude=[*DEFAULT_EXCLUDE, "ban-drop-column"]).verdict == "safe"
    noisy = lint_sql("m", sql, exclude=[])
    assert "prefer-text-field" in {f.rule for f in noisy.findings}
    assert "prefer-text-field" not in {f.rule for f in lint_sql("m", sql).findings}


def test_umami_corpus_lints_and_its_init_is_safe(umami_migrations: Path) -> None:
    report = lint_folder(umami_migrations)
    by_name = {m.name: m for m in report.migrations}
    assert len(report.migrations) == 19
    assert by_name["01_init"].verdict == "safe"
    assert by_name["02_report_schema_session_data"].verdict == "risky"  # RENAME COLUMN
    assert {f.category for f in by_name["12_update_report_parameter"].findings} == {"change-column-type"}
    assert by_name["16_boards"].verdict == "safe"  # new table with its indexes
    assert not report.zero_downtime_safe


def test_lint_folder_with_names_and_missing_folder(tmp_path: Path) -> None:
    for name, sql in (("a", "CREATE TABLE t (id int);"), ("b", "DROP TABLE t;")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "migration.sql").write_text(sql)
    assert [m.name for m in lint_folder(tmp_path, ["b"]).migrations] == ["b"]
    with pytest.raises(ActionError, match="not a directory"):
        lint_folder(tmp_path / "nope")


def test_missing_squawk_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ActionError, match="pip install squawk-cli"):
        lint_sql("m", "SELECT 1;")


def test_cli_lint_folder_json_and_exit_codes(umami_migrations: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(umami_migrations), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["zero_downtime_safe"] is False
    first = data["migrations"][0]
    assert set(first) == {"name", "verdict", "findings", "notes"} and first["verdict"] == "safe"
    (tmp_path / "1_add").mkdir()
    (tmp_path / "1_add" / "migration.sql").write_text("ALTER TABLE users ADD COLUMN display_name VARCHAR(255);")
    assert main(["lint", str(tmp_path)]) == 0
    assert "zero-downtime safe: yes" in capsys.readouterr().out


def test_cli_lint_environment_lints_its_pending_migrations(tmp_path: Path, database_url: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    migrations = tmp_path / "migrations"
    for name, sql in (("20240101000000_init", "CREATE TABLE users (id int, name text);"),
                      ("20240102000000_drop", "ALTER TABLE users DROP COLUMN name;")):
        (migrations / name).mkdir(parents=True)
        (migrations / name / "migration.sql").write_text(sql)
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.staging]\ndatabase_url = "{database_url}"\nmigrations_dir = "{migrations}"\n'
                      f'backup_dir = "{tmp_path / "backups"}"\n')
    assert main(["lint", "staging", "--config", str(config), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["verdict"]) for m in data["migrations"]] == [
        ("20240101000000_init", "safe"), ("20240102000000_drop", "risky")]
    assert main(["lint", "nowhere", "--config", str(config)]) == 2
    assert "unknown environment" in capsys.readouterr().err


def _folder(root: Path, migrations: dict[str, str]) -> Path:
    for name, sql in migrations.items():
        (root / name).mkdir(parents=True)
        (root / name / "migration.sql").write_text(sql)
    return root


def test_cli_lint_folder_follows_the_configurations_lint_exclude(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """squawk starts with the default exclusions before the configuration is read; a configuration that
    wants one of those rules back gets squawk run again (its findings are not lost)."""
    folder = _folder(tmp_path / "migrations", {"1_add": "ALTER TABLE users ADD COLUMN display_name VARCHAR(255);"})
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.dev]\ndatabase_url = "postgresql://nobody@127.0.0.1:1/none"\n'
                      f'migrations_dir = "{folder}"\n\n[lint]\nexclude = ["prefer-robust-stmts"]\n')
    assert main(["lint", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["migrations"][0]["findings"] == []
    main(["lint", str(folder), "--json", "--config", str(config)])
    rules = {f["rule"] for f in json.loads(capsys.readouterr().out)["migrations"][0]["findings"]}
    assert "prefer-text-field" in rules and "prefer-robust-stmts" not in rules


def test_cli_lint_folder_loads_neither_asyncio_nor_the_configuration_when_there_is_none(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "migrations", {"1_init": "CREATE TABLE t (id int);"})
    script = ("import sys\nfrom bot.cli import main\ncode = main(['lint', sys.argv[1]])\n"
              "print([m for m in ('asyncio', 'bot.config', 'asyncpg') if m in sys.modules])\nsys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if k != "MIGRABOT_CONFIG"}
    done = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "zero-downtime safe: yes" in done.stdout


def test_each_commands_parser_built_alone_is_the_full_ones() -> None:
    # `migrabot COMMAND` builds only its own module's parser: the same options and help as in the whole
    # parser, and the table names every command there is
    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) == set(sub.choices)
    for name, module in COMMANDS.items():
        alone = build_parser((module,))
        alone_sub = next(a for a in alone._actions if isinstance(a, argparse._SubParsersAction))
        assert alone_sub.choices[name].format_help() == sub.choices[name].format_help(), name
    assert COMMANDS["lint"] == "bot.cli.lint_cmd"
    assert command_word(["--config=x.toml", "--json", "lint", "dir"]) == "lint"
    assert command_word(["-h"]) is None and command_word([]) is None
    assert CONFIG_FILE == DEFAULT_CONFIG_PATH  # lint_cmd looks for the file without loading bot.config


def test_version_and_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("migrabot ")
    with pytest.raises(SystemExit) as unknown:
        main(["nosuch"])
    assert unknown.value.code == 2 and "'lint'" in capsys.readouterr().err  # the choices, all of them


def test_a_squawk_that_refuses_the_exclusions_is_run_again_without_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "squawk"
    fake.write_text("#!/bin/sh\ncase \"$*\" in *--exclude*) echo \"error: invalid value for '--exclude <rule>'\" >&2; "
                    "exit 2;; esac\necho '[]'\n")
    fake.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    run = SquawkRun([tmp_path / "x.sql"], exclude=DEFAULT_EXCLUDE)
    assert run.skipped
    assert run.result() == [] and run.skipped == ()


def test_squawk_failing_without_output_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="squawk failed"):
        SquawkRun([tmp_path / "missing.sql"]).result()


def test_cli_lint_folder_starts_squawk_before_loading_the_linter(tmp_path: Path) -> None:
    # squawk's run is the floor of `migrabot lint DIR`: it starts before the linter, the splitter and
    # logging load, so that their loading and the reading of the files overlap it
    folder = _folder(tmp_path / "migrations", {"1_init": "CREATE TABLE t (id int);"})
    script = ("import sys\nimport actions.squawk as sq\nstart = sq.SquawkRun._start\nseen = []\n"
              "def spy(self, skipped):\n"
              "    seen.append([m for m in ('actions.lint', 'actions.sqlsplit', 'logging', 'dataclasses', 'typing')"
              " if m in sys.modules])\n"
              "    return start(self, skipped)\n"
              "sq.SquawkRun._start = spy\nfrom bot.cli import main\ncode = main(['lint', sys.argv[1]])\n"
              "print(seen)\nsys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if k != "MIGRABOT_CONFIG"}
    done = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[[]]"  # one squawk, started with none of them loaded
    assert "zero-downtime safe: yes" in done.stdout


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "create-and-unlink"])
def test_squawks_report_file_leaves_nothing_in_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmpfile: bool) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    sql = tmp_path / "m.sql"
    sql.write_text("ALTER TABLE t DROP COLUMN x;")
    run = SquawkRun([sql])
    assert list(scratch.iterdir()) == []  # no name is ever visible, even while squawk writes
    assert "ban-drop-column" in [f["rule_name"] for f in run.result()]
    assert list(scratch.iterdir()) == []


def test_the_report_is_the_same_whether_files_are_split_before_or_after_squawk_answers(
        umami_migrations: Path) -> None:
    # migrabot splits statements only while squawk runs, then only what a finding (or --json's notes)
    # needs: a squawk that has already finished must give the same findings, lines and notes
    usual = lint_folder(umami_migrations).to_dict()
    done = start_squawk(umami_migrations)
    while done.running():
        time.sleep(0.01)
    late = lint_folder(umami_migrations, squawk=done).to_dict()
    assert late == usual
    assert any(m["notes"] for m in late["migrations"]) and any(m["findings"] for m in late["migrations"])
