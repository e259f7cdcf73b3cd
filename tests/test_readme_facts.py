"""What the README and the example configuration say is what migrabot does."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bot.cli import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_example_configuration_gives_the_documented_backup_layout(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "migrabot.toml"
    shutil.copy(ROOT / "migrabot.example.toml", config)
    for name in ("STAGING_DATABASE_URL", "DATABASE_URL", "DIRECT_DATABASE_URL"):
        monkeypatch.setenv(name, database_url)
    monkeypatch.setenv("PGBOUNCER_ADMIN_URL", "postgresql://pgbouncer@127.0.0.1:6432/pgbouncer")
    monkeypatch.delenv("MIGRABOT_CONFIG", raising=False)
    assert main(["backup", "staging", "--config", str(config), "--json"]) == 0, capsys.readouterr().err
    path = Path(json.loads(capsys.readouterr().out)["path"])
    # <backup_dir>/<env>/YYYYMMDD_HHMMSS/, backup_dir relative to the configuration file
    assert path.parent == tmp_path / "backups" / "staging" and re.fullmatch(r"\d{8}_\d{6}", path.name)
    assert "`<backup_dir>/<env>/YYYYMMDD_HHMMSS/`" in README


def test_the_readme_describes_the_commands_as_they_behave() -> None:
    # restore takes an id or "latest" (in a table the | is escaped)
    assert re.search(r"migrabot restore ENV ID\\?\|latest", README)
    # deploy --dry-run lists what would run and changes nothing; it is not the Slack checklist
    row = next(line for line in README.splitlines() if "`migrabot deploy ENV --dry-run`" in line)
    assert "changes nothing" in row and "outside a transaction" in row
    # the console's state: a temporary file per session unless --state
    console = README[README.index("## Trying it without Slack"):README.index("## Configuration")]
    assert "--state FILE" in console and "temporary" in console
