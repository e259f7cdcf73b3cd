"""Monitoring on a real server: the report, a real lock chain, health checks, and the CLI shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiohttp import web

from actions.errors import ActionError
from actions.health import health_check
from actions.lock_chains import blocking_sessions, find_blockers, terminate_backend
from actions.report import monitoring_report
from bot.cli import main
from bot.config import Environment

if TYPE_CHECKING:
    from tests.pgbouncer_fixture import PgBouncer

pytest_plugins = ["tests.pgbouncer_fixture"]

SECRET_URL = "postgresql://app:hunter2-secret@db.example/prod"


async def _wait_for(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns something truthy (server-side state settles quickly)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def _make_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""
            CREATE TABLE "User" (id int PRIMARY KEY, email text UNIQUE, name text, team int);
            CREATE INDEX "User_name_idx" ON "User"(name);
            CREATE INDEX "User_team_idx" ON "User"(team);
            INSERT INTO "User" SELECT g, 'u' || g || '@x', 'n' || g, g % 10 FROM generate_series(1, 20000) g;
            CREATE TABLE small (id int);
            ANALYZE;
            SET enable_seqscan = off;
        """)
        # use one index, so that it is not reported as never used
        await conn.fetch('SELECT * FROM "User" WHERE name = $1', "n5")
    finally:
        await conn.close()  # a closing backend flushes its statistics


async def test_report_sizes_indexes_and_connections_by_state(database_url: str) -> None:
    await _make_schema(database_url)
    idle = await asyncpg.connect(database_url)
    in_tx = await asyncpg.connect(database_url)
    busy = await asyncpg.connect(database_url)
    sleeper = None
    try:
        await in_tx.execute("BEGIN; SELECT 1")
        sleeper = asyncio.ensure_future(busy.execute(
            f"SELECT pg_sleep(30) /* {SECRET_URL} */"))
        await asyncio.sleep(0.3)  # the sleeping query must be older than the 0.2s threshold below

        report = await monitoring_report(database_url, long_query_threshold=0.2, limit=1)
        assert report.tables[0].table == "User" and report.tables[0].bytes > 1_000_000
        assert report.tables_more == 1  # "small" was cut by limit=1
        assert report.database_bytes > report.tables[0].bytes

        full = await monitoring_report(database_url, long_query_threshold=0.2)
        assert [t.table for t in full.tables] == ["User", "small"]
        used = next(i for i in full.indexes if i.index == "User_name_idx")
        assert used.scans >= 1
        unused = [i.index for i in full.unused_indexes]
        assert "User_team_idx" in unused
        assert "User_pkey" not in unused and "User_email_key" not in unused  # constraints use them
        assert full.connections_by_state.get("idle", 0) >= 1
        assert full.connections_by_state.get("idle in transaction", 0) >= 1
        assert full.connections_by_state.get("active", 0) >= 1
        assert full.connections_total >= full.connections_database >= 4
        long = [q for q in full.long_queries if q.pid == busy.get_server_pid()]
        assert long and long[0].duration >= 0.2
        assert "pg_sleep" in long[0].query and "hunter2-secret" not in long[0].query
        assert in_tx.get_server_pid() in {q.pid for q in full.long_queries}  # open transaction counts too
        data = json.loads(json.dumps(full.to_dict(), default=str))
        assert data["unused_indexes"][0]["index"] and "tables_more" in data
    finally:
        if sleeper:
            sleeper.cancel()
        for conn in (idle, in_tx, busy):
            conn.terminate()


async def test_blocked_chain_found_then_released_by_terminate(database_url: str) -> None:
    holder = await asyncpg.connect(database_url)
    waiter = await asyncpg.connect(database_url)
    try:
        await holder.execute("CREATE TABLE t (id int)")
        await holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        waiting = asyncio.ensure_future(waiter.fetch("SELECT * FROM t"))
        chains = await _wait_for(lambda: find_blockers(database_url))
        assert len(chains) == 1
        chain = chains[0]
        assert chain.waiting.pid == waiter.get_server_pid()
        assert chain.waiting.wait_event and chain.waiting.wait_event.startswith("Lock:")
        assert [b.pid for b in chain.blockers] == [holder.get_server_pid()]
        assert chain.blockers[0].state == "idle in transaction" and chain.blockers[0].xact_age is not None
        assert [s.pid for s in blocking_sessions(chains)] == [holder.get_server_pid()]
        assert chain.to_dict()["blockers"][0]["query"].startswith("BEGIN; LOCK TABLE t")

        assert await terminate_backend(database_url, holder.get_server_pid()) is True
        assert await asyncio.wait_for(waiting, timeout=5) == []
        assert await find_blockers(database_url) == []
    finally:
        holder.terminate()
        waiter.terminate()


async def test_terminate_refuses_other_databases_and_unknown_pids(database_url: str, pg_server) -> None:
    other = await asyncpg.connect(pg_server.admin_url)
    try:
        with pytest.raises(ActionError, match="not a session of database"):
            await terminate_backend(database_url, other.get_server_pid())
        assert await other.fetchval("SELECT 1") == 1  # untouched
        with pytest.raises(ActionError, match="no session with pid"):
            await terminate_backend(database_url, 2_000_000_000)
    finally:
        await other.close()


# --- health ------------------------------------------------------------------------------------


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """A local application: /ok answers 200, /broken answers 500."""
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="db down")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _env(tmp_path: Path, database_url: str, **kwargs: object) -> Environment:
    migrations = tmp_path / "migrations"
    (migrations / "20240101000000_init").mkdir(parents=True, exist_ok=True)
    (migrations / "20240101000000_init" / "migration.sql").write_text("CREATE TABLE a (id int);\n")
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    return Environment(name="staging", database_url=database_url, migrations_dir=migrations,
                       backup_dir=tmp_path / "backups", **kwargs)  # type: ignore[arg-type]


async def test_health_passes_connectivity_and_flags_pending_and_missing_backup(
        tmp_path: Path, database_url: str, http_server: str) -> None:
    report = await health_check(_env(tmp_path, database_url, health_url=f"{http_server}/ok"), timeout=5)
    by_name = {c.name: c for c in report.checks}
    assert by_name["database"].status == "pass" and by_name["database"].latency_ms is not None
    assert by_name["migrations"].status == "warn" and "20240101000000_init" in by_name["migrations"].reason
    assert by_name["backup"].status == "warn" and "no backup" in by_name["backup"].reason
    assert by_name["health_url"].status == "pass" and "200" in by_name["health_url"].reason
    assert report.verdict == "warn" and "pgbouncer" not in by_name


async def test_health_url_500_and_closed_port_fail(tmp_path: Path, database_url: str, http_server: str) -> None:
    report = await health_check(_env(tmp_path, database_url, health_url=f"{http_server}/broken"), timeout=5)
    check = report.check("health_url")
    assert check and check.status == "fail" and "500" in check.reason
    assert report.verdict == "fail"

    closed = "http://127.0.0.1:9/health"  # discard port: nothing listens there
    report = await health_check(_env(tmp_path, database_url, health_url=closed), timeout=2)
    check = report.check("health_url")
    assert check and check.status == "fail" and "unreachable" in check.reason


async def test_health_with_pgbouncer_up_then_down(tmp_path: Path, database: str,
                                                  running_pgbouncer: PgBouncer) -> None:
    env = _env(tmp_path, running_pgbouncer.url_for(database), pgbouncer_admin_url=running_pgbouncer.admin_url,
               direct_url=None)
    up = await health_check(env, timeout=5)
    assert up.check("pgbouncer").status == "pass"  # type: ignore[union-attr]
    assert up.check("database").status == "pass"  # type: ignore[union-attr]
    running_pgbouncer.stop()
    try:
        down = await health_check(env, timeout=2)
    finally:
        running_pgbouncer.start()
    check = down.check("pgbouncer")
    assert check and check.status == "fail" and "unreachable" in check.reason and "refused" in check.reason
    assert down.verdict == "fail"


async def test_health_with_an_unreachable_database(tmp_path: Path) -> None:
    report = await health_check(_env(tmp_path, "postgresql://u:hunter2-secret@127.0.0.1:9/x"), timeout=2)
    assert report.check("database").status == "fail"  # type: ignore[union-attr]
    assert report.check("migrations").status == "fail"  # type: ignore[union-attr]
    assert "hunter2-secret" not in json.dumps(report.to_dict(), default=str)


# --- CLI ---------------------------------------------------------------------------------------


def _config(tmp_path: Path, database_url: str, **extra: str) -> str:
    env = _env(tmp_path, database_url)
    lines = ["[environments.staging]", f'database_url = "{database_url}"',
             f'migrations_dir = "{env.migrations_dir}"', f'backup_dir = "{env.backup_dir}"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    path = tmp_path / "migrabot.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_json_shapes(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_make_schema(database_url))
    config = _config(tmp_path, database_url, health_url="http://127.0.0.1:9/health")

    assert main(["report", "staging", "--config", config, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"database", "database_size", "tables", "indexes", "unused_indexes", "connections_by_state",
            "connections_total", "long_queries", "tables_more"} <= set(data)
    assert data["tables"][0]["table"] == "User"

    assert main(["health", "staging", "--config", config, "--json"]) == 1  # the health URL fails
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "fail"
    assert [c["name"] for c in data["checks"]] == ["database", "migrations", "backup", "health_url"]
    assert set(data["checks"][0]) == {"name", "status", "reason", "latency_ms", "details"}

    assert main(["blockers", "staging", "--config", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"blocked": [], "root_blockers": []}


def test_cli_human_output(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_make_schema(database_url))
    config = _config(tmp_path, database_url)
    assert main(["report", "staging", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "Largest tables" in out and "User_team_idx" in out and "MB" in out
    assert main(["health", "staging", "--config", config]) == 0  # warnings only: pending migration, no backup
    out = capsys.readouterr().out
    assert "WARN" in out and "migrations" in out
    assert main(["blockers", "staging", "--config", config]) == 0
    assert "No session is waiting" in capsys.readouterr().out


async def test_health_backup_check_with_a_real_backup(tmp_path: Path, database_url: str) -> None:
    from actions.backup import take_backup

    env = _env(tmp_path, database_url)
    await _make_schema(database_url)
    info = await take_backup(database_url, env.backup_dir, env.name, reason="test", requested_by="tests")
    report = await health_check(env, timeout=5)
    check = report.check("backup")
    assert check and check.status == "pass" and info.id in check.reason and "verified" in check.reason
    assert check.details["verified"] is True and check.details["age_seconds"] < 60
