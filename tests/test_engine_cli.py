"""`migrabot status | deploy | resolve` through bot.cli.main: output shapes, exit codes, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from tests.engine_helpers import make_migrations
from tests.pgserver import with_password

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def setup(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    # trust auth accepts any password: the URL carries one so we can check it never leaks
    url = with_password(database_url, PASSWORD)
    assert PASSWORD in url
    folder = make_migrations(tmp_path / "m", {
        "01_a": "CREATE TABLE a (x int);",
        "02_idx": "CREATE INDEX CONCURRENTLY a_x ON a (x);",
        "03_bad": "SELECT 1/0;",
    })
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.test]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n')
    monkeypatch.delenv("MIGRABOT_CONFIG", raising=False)
    return config, folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    return code, out, err


def test_status_deploy_resolve_cycle(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, folder = setup
    code, out, _ = run(capsys, "status", "test", "--json", "--config", str(config))
    data = json.loads(out)
    assert code == 1 and data["pending"] == ["01_a", "02_idx", "03_bad"] and data["up_to_date"] is False
    assert {"applied", "pending", "failed", "modified", "missing", "rolled_back", "up_to_date"} <= set(data)
    assert data["non_transactional"] == ["02_idx"]

    code, out, _ = run(capsys, "status", "test", "--config", str(config))
    assert code == 1 and "02_idx: runs OUTSIDE a transaction" in out and "01_a: runs in a transaction" in out

    code, out, _ = run(capsys, "deploy", "test", "--dry-run", "--json", "--config", str(config))
    assert code == 0 and json.loads(out)["pending"] == ["01_a", "02_idx", "03_bad"]

    code, out, err = run(capsys, "deploy", "test", "--config", str(config))
    assert code == 1
    assert "01_a: started" in out and "01_a applied in" in out and "03_bad: FAILED" in out
    assert "division by zero" in out and "Backup (pg_dump)" in out and "verified" in out  # the runbook backs up

    code, out, err = run(capsys, "deploy", "test", "--json", "--config", str(config))
    assert code == 2 and "P3009" in err and "resolve test --rolled-back 03_bad" in err and out == ""

    code, out, _ = run(capsys, "status", "test", "--json", "--config", str(config))
    data = json.loads(out)
    assert code == 1 and data["failed"] == ["03_bad"] and data["applied"] == ["01_a", "02_idx"]

    code, out, _ = run(capsys, "resolve", "test", "--rolled-back", "03_bad", "--json", "--config", str(config))
    assert code == 0 and json.loads(out)["resolved_as"] == "rolled_back"
    code, out, _ = run(capsys, "status", "test", "--json", "--config", str(config))
    data = json.loads(out)
    assert data["pending"] == ["03_bad"] and data["rolled_back"] == ["03_bad"] and data["failed"] == []

    (folder / "03_bad" / "migration.sql").write_text("SELECT 1;")
    code, out, _ = run(capsys, "deploy", "test", "--json", "--config", str(config))
    data = json.loads(out)
    assert code == 0 and [m["name"] for m in data["applied"]] == ["03_bad"]
    assert [e["kind"] for e in data["events"]] == ["started", "finished"]
    code, out, _ = run(capsys, "status", "test", "--config", str(config))
    assert code == 0 and "up to date" in out

    code, _, err = run(capsys, "resolve", "test", "--applied", "03_bad", "--config", str(config))
    assert code == 2 and "P3008" in err


def test_unreachable_database_is_one_redacted_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "SELECT 1;"})
    config = tmp_path / "migrabot.toml"
    config.write_text(f'[environments.test]\ndatabase_url = "postgresql://app:{PASSWORD}@127.0.0.1:1/x"\n'
                      f'migrations_dir = "{folder}"\nconnect_timeout = "2s"\n')
    monkeypatch.delenv("MIGRABOT_CONFIG", raising=False)
    code, _, err = run(capsys, "status", "test", "--config", str(config))
    assert code == 2 and "127.0.0.1:1" in err
