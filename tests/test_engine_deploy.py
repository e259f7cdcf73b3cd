"""Deploy and status against a real PostgreSQL: Prisma's bookkeeping, refusals, truthful status."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from actions.deploy import deploy
from actions.errors import ActionError
from actions.migrations_dir import read_migrations
from actions.resolve import resolve_applied, resolve_rolled_back
from actions.status import migration_status
from tests.engine_helpers import fetchval, make_migrations, rows

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_umami_corpus_is_recorded_like_prisma(database_url: str, umami_deployable: Path) -> None:
    result = await deploy(database_url, umami_deployable)
    assert result.ok and len(result.applied) == 19
    recorded = await rows(database_url)
    assert len(recorded) == 19
    for row in recorded:
        expected = hashlib.sha256((umami_deployable / row["migration_name"] / "migration.sql").read_bytes()).hexdigest()
        assert row["checksum"] == expected
        assert UUID4.match(row["id"])
        assert row["finished_at"] is not None and row["rolled_back_at"] is None
        assert row["applied_steps_count"] == 1 and row["logs"] is None
    assert [r["migration_name"] for r in recorded] == sorted(p.name for p in umami_deployable.iterdir() if p.is_dir())  # noqa: ASYNC240
    status = await migration_status(database_url, umami_deployable)
    assert status.up_to_date and status.last_applied == "19_add_session_replay"
    again = await deploy(database_url, umami_deployable)
    assert again.applied == [] and again.pending == []
    assert len(await rows(database_url)) == 19


async def test_status_on_a_fresh_database_lists_everything_pending_and_creates_nothing(
        database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);", "02_b": "CREATE TABLE b (x int);"})
    status = await migration_status(database_url, folder)
    assert status.pending == ["01_a", "02_b"] and not status.up_to_date
    assert status.to_dict()["applied"] == [] and status.to_dict()["up_to_date"] is False
    assert await fetchval(database_url, "SELECT to_regclass('_prisma_migrations')") is None


async def test_failed_migration_blocks_deploys_until_resolved(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_ok": "CREATE TABLE a (x int);",
        "02_bad": "CREATE TABLE b (x int);\nSELECT 1/0;",
        "03_next": "CREATE TABLE c (x int);",
    })
    result = await deploy(database_url, folder)
    assert [m.name for m in result.applied] == ["01_ok"]
    assert result.failed is not None and result.failed.name == "02_bad"
    assert "division by zero" in result.failed.logs
    bad = [r for r in await rows(database_url) if r["migration_name"] == "02_bad"]
    assert len(bad) == 1 and bad[0]["finished_at"] is None and bad[0]["applied_steps_count"] == 0
    assert "division by zero" in bad[0]["logs"]
    # the schema change of the failed file rolled back with it
    assert await fetchval(database_url, "SELECT to_regclass('b')") is None

    with pytest.raises(ActionError) as refused:
        await deploy(database_url, folder)
    message = str(refused.value)
    assert "P3009" in message and "02_bad" in message
    assert "resolve ENV --rolled-back 02_bad" in message and "resolve ENV --applied 02_bad" in message
    status = await migration_status(database_url, folder)
    assert [f.name for f in status.failed] == ["02_bad"] and "03_next" in status.pending

    # rolled back: status tells the truth (pending), and deploy runs it again once fixed
    assert "02_bad" in await resolve_rolled_back(database_url, folder, "02_bad")
    status = await migration_status(database_url, folder)
    assert status.failed == [] and status.pending == ["02_bad", "03_next"] and status.rolled_back == ["02_bad"]
    (folder / "02_bad" / "migration.sql").write_text("CREATE TABLE b (x int);")
    result = await deploy(database_url, folder)
    assert [m.name for m in result.applied] == ["02_bad", "03_next"] and result.ok
    assert (await migration_status(database_url, folder)).up_to_date


async def test_resolve_applied_records_a_hand_finished_migration(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_bad": "SELECT 1/0;", "02_next": "CREATE TABLE c (x int);"})
    assert (await deploy(database_url, folder)).failed is not None
    message = await resolve_applied(database_url, folder, "01_bad")
    assert "01_bad" in message
    recorded = [r for r in await rows(database_url) if r["migration_name"] == "01_bad"]
    assert len(recorded) == 2
    failed, resolved = recorded
    assert failed["rolled_back_at"] is not None
    assert resolved["finished_at"] is not None and resolved["logs"] == "" and resolved["applied_steps_count"] == 0
    assert resolved["started_at"] == resolved["finished_at"]
    assert resolved["checksum"] == hashlib.sha256(b"SELECT 1/0;").hexdigest()
    result = await deploy(database_url, folder)
    assert [m.name for m in result.applied] == ["02_next"]
    with pytest.raises(ActionError, match="P3008"):
        await resolve_applied(database_url, folder, "01_bad")
    with pytest.raises(ActionError, match="P3017"):
        await resolve_applied(database_url, folder, "99_nowhere")
    with pytest.raises(ActionError, match="P3011"):
        await resolve_rolled_back(database_url, folder, "99_nowhere")
    with pytest.raises(ActionError, match="P3012"):
        await resolve_rolled_back(database_url, folder, "02_next")


async def test_modified_missing_and_crlf(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_a": "CREATE TABLE a (x int);\nCREATE TABLE a2 (x int);\n",
        "02_b": "CREATE TABLE b (x int);\n",
        "03_c": "CREATE TABLE c (x int);\n",
    })
    assert (await deploy(database_url, folder)).ok
    # a Windows checkout of the same file is not an edit
    path = folder / "01_a" / "migration.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert (await migration_status(database_url, folder)).up_to_date
    (folder / "02_b" / "migration.sql").write_text("CREATE TABLE b (x bigint);\n")
    shutil.rmtree(folder / "03_c")
    status = await migration_status(database_url, folder)
    assert status.modified == ["02_b"] and status.missing == ["03_c"] and not status.up_to_date
    with pytest.raises(ActionError, match="02_b"):
        await deploy(database_url, folder)


async def test_concurrently_file_runs_outside_a_transaction(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_table": "CREATE TABLE t (x int, y int);",
        "02_index": "-- mixed file\nALTER TABLE t ADD COLUMN z int;\nCREATE INDEX CONCURRENTLY t_x ON t (x);\n"
                    "CREATE UNIQUE INDEX CONCURRENTLY t_y ON t (y)",
    })
    status = await migration_status(database_url, folder)
    assert status.non_transactional == ["02_index"]
    assert status.to_dict()["non_transactional"] == ["02_index"]
    dry = await deploy(database_url, folder, dry_run=True)
    assert dry.dry_run and dry.pending == ["01_table", "02_index"] and dry.non_transactional == ["02_index"]
    assert dry.applied == [] and await fetchval(database_url, "SELECT to_regclass('t')") is None
    result = await deploy(database_url, folder)
    assert result.ok and [m.transactional for m in result.applied] == [True, False]
    assert await fetchval(database_url, "SELECT count(*) FROM pg_index WHERE indisvalid "
                                        "AND indexrelid::regclass::text IN ('t_x', 't_y')") == 2


async def test_failure_in_non_transactional_file_names_the_statement(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_idx": "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_q "
                  "ON t (nope);\nCREATE TABLE after_it (x int);",
    })
    result = await deploy(database_url, folder)
    assert result.failed is not None
    assert result.failed.statement is not None and "statement 3 of 4 (line 3)" in result.failed.statement
    assert "nope" in result.failed.logs and "statement 3 of 4" in result.failed.logs
    row = (await rows(database_url))[0]
    assert row["finished_at"] is None and "statement 3 of 4" in row["logs"]
    assert await fetchval(database_url, "SELECT to_regclass('after_it')") is None


async def test_do_block_without_final_semicolon(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {
        "01_do": "CREATE TABLE t (x int);\nDO $$\nBEGIN\n  INSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (2);\n"
                 "END\n$$",
    })
    assert (await deploy(database_url, folder)).ok
    assert await fetchval(database_url, "SELECT count(*) FROM t") == 2


async def test_expected_list_guards_an_approved_plan(database_url: str, tmp_path: Path) -> None:
    folder = make_migrations(tmp_path / "m", {"01_a": "CREATE TABLE a (x int);", "02_b": "CREATE TABLE b (x int);"})
    with pytest.raises(ActionError, match="changed since they were shown"):
        await deploy(database_url, folder, expected=["01_a"])
    assert await fetchval(database_url, "SELECT to_regclass('a')") is None
    result = await deploy(database_url, folder, expected=["01_a", "02_b"])
    assert result.ok and len(result.applied) == 2


async def test_should_continue_stops_between_migrations_and_events_cannot_break_it(
        database_url: str, tmp_path: Path) -> None:
    # files that write rows: each is sent alone, so a stop is seen between any two of them
    folder = make_migrations(tmp_path / "m", {f"0{i}_t": f"CREATE TABLE t{i} (x int); INSERT INTO t{i} VALUES (1);"
                                              for i in range(1, 4)})
    seen: list[str] = []

    async def broken_listener(event) -> None:  # type: ignore[no-untyped-def]
        seen.append(f"{event.kind}:{event.migration}")
        raise RuntimeError("slack is down")

    result = await deploy(database_url, folder, on_event=broken_listener, should_continue=lambda: len(seen) < 2)
    assert result.aborted and [m.name for m in result.applied] == ["01_t"]
    assert seen == ["started:01_t", "finished:01_t"]
    status = await migration_status(database_url, folder)
    assert status.applied == ["01_t"] and status.pending == ["02_t", "03_t"] and status.failed == []


async def test_should_continue_is_asked_between_batches_of_files_that_only_create(
        database_url: str, tmp_path: Path) -> None:
    # files that only create new objects share a round trip (milliseconds): a stop is seen before and after it
    folder = make_migrations(tmp_path / "m", {**{f"0{i}_t": f"CREATE TABLE t{i} (x int);" for i in range(1, 4)},
                                              "04_fill": "INSERT INTO t1 VALUES (1);",
                                              "05_t": "CREATE TABLE t5 (x int);"})
    asked: list[int] = []

    def should_continue() -> bool:
        asked.append(1)
        return len(asked) < 3

    result = await deploy(database_url, folder, should_continue=should_continue)
    assert result.aborted and [m.name for m in result.applied] == ["01_t", "02_t", "03_t", "04_fill"]
    assert (await migration_status(database_url, folder)).pending == ["05_t"]


def test_reading_folders(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="migrations_dir"):
        read_migrations(tmp_path / "absent")
    make_migrations(tmp_path / "mysql", {"01_a": "SELECT 1;"}, provider="mysql")
    with pytest.raises(ActionError, match="mysql"):
        read_migrations(tmp_path / "mysql")
    folder = make_migrations(tmp_path / "m", {"01_a": "SELECT 1;"}, down={"01_a": ("rollback.sql", "SELECT 2;")})
    (folder / "02_empty").mkdir()
    with pytest.raises(ActionError, match="02_empty"):
        read_migrations(folder)
    (folder / "02_empty").rmdir()
    (m,) = read_migrations(folder)
    assert m.down_sql_path == folder / "01_a" / "rollback.sql" and m.transactional


async def test_statement_by_statement_keeps_functions_rules_and_non_ascii_names_whole(
        database_url: str, tmp_path: Path) -> None:
    # CONCURRENTLY makes the file run statement by statement, so the splitter decides what PostgreSQL
    # receives: a BEGIN ATOMIC body, a rule's (...; ...) and an unquoted non-ASCII name must stay whole
    folder = make_migrations(tmp_path / "m", {
        "01_mixed": "CREATE TABLE café (prix int);\nCOMMENT ON TABLE café IS 'ça';\n"
                    "CREATE TABLE log (n int, élan int);\n"
                    "CREATE FUNCTION twice(a int) RETURNS int LANGUAGE sql\n"
                    "BEGIN ATOMIC SELECT CASE WHEN a > 0 THEN a * 2 ELSE 0 END; END;\n"
                    "CREATE RULE café_log AS ON INSERT TO café DO ALSO (INSERT INTO log VALUES (1); "
                    "INSERT INTO log VALUES (2));\n"
                    "CREATE INDEX CONCURRENTLY café_prix ON café (prix);",
    })
    status = await migration_status(database_url, folder)
    assert status.non_transactional == ["01_mixed"]
    result = await deploy(database_url, folder)
    assert result.ok, result.failed
    assert await fetchval(database_url, "SELECT twice(21)") == 42
    await fetchval(database_url, "INSERT INTO café VALUES (1)")
    assert await fetchval(database_url, "SELECT count(*) FROM log") == 2
