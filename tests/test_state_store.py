"""The bot's state store upgrades on open: older stores keep their records, newer ones are refused.

Each test runs on both backends (``state_target`` in conftest.py: a SQLite file, a throwaway
PostgreSQL database), unless its name says it is about one.

``fixtures/state_v1.sql`` is a state file made by the code of schema 1 (runs, votes, ticks, audit rows,
a held lock, a pending schedule), dumped as SQL so that no binary file is committed. On PostgreSQL the
same records are copied into a store made by step 1.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from state import approvals, audit, locks, runs, ticks
from state.store import (
    PG_SCHEMA,
    SCHEMA_VERSION,
    STEPS,
    PostgresStore,
    SqliteStore,
    StateVersionError,
    Step,
    Store,
    is_postgres_url,
    open_store,
    schema_version,
    upgrade,
)

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1.sql"
V2_INDEXES = {"idx_audit_at", "idx_dedup_at", "idx_schedules_status"}
V3_COLUMNS = {"runs.owner", "runs.heartbeat_at"}


def _raw(target: str) -> Store:
    """A connection to the store that neither creates nor upgrades anything."""
    if is_postgres_url(target):
        return PostgresStore(target)
    return SqliteStore(sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10), target)


def _query(target: str, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    raw = _raw(target)
    try:
        return raw.fetch_all(sql, args)
    finally:
        raw.close()


def _records(target: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but ``meta``, in a stable order."""
    raw = _raw(target)
    try:
        return {t: sorted((tuple(r.values()) for r in raw.fetch_all(f'SELECT * FROM "{t}"')), key=repr)
                for t in raw.table_names() if t != "meta"}
    finally:
        raw.close()


def _schema(target: str) -> dict[str, str]:
    """Each table's columns (``table.column``) and each index, with their definitions."""
    if not is_postgres_url(target):
        found = {r["name"]: r["sql"]
                 for r in _query(target, "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
        for table in [n for n, sql in found.items() if sql.startswith("CREATE TABLE")]:
            for col in _query(target, f'PRAGMA table_info("{table}")'):
                found[f"{table}.{col['name']}"] = col["type"]
        return found
    columns = _query(target, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = ?", [PG_SCHEMA])
    indexes = _query(target, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = ?", [PG_SCHEMA])
    return {**{f"{c['table_name']}.{c['column_name']}": c["data_type"] for c in columns},
            **{i["indexname"]: i["indexdef"] for i in indexes}}


def _version(target: str) -> int:
    return int(_query(target, "SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"])


def _fixture_rows() -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(FIXTURE.read_text())
    conn.row_factory = sqlite3.Row
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'")]
    rows = {t: [dict(r) for r in conn.execute(f'SELECT * FROM "{t}"')] for t in tables}
    conn.close()
    return rows


def _v1_store(target: str) -> str:
    """A schema-1 store holding the fixture's records."""
    if not is_postgres_url(target):
        conn = sqlite3.connect(target)
        conn.executescript(FIXTURE.read_text())
        conn.close()
        return target
    raw = PostgresStore(target)
    try:
        raw.execute(f"CREATE SCHEMA {PG_SCHEMA}")
        assert upgrade(raw, steps=STEPS[:1]) == 1
        for table, rows in _fixture_rows().items():
            for row in rows:
                cols, marks = ", ".join(f'"{c}"' for c in row), ", ".join("?" for _ in row)
                raw.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', list(row.values()))
        for table in ("runs", "approvals", "audit"):  # as a copy would: ids go on after the copied ones
            raw.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    finally:
        raw.close()
    return target


def _where(target: str) -> str:
    return (f"state schema {PG_SCHEMA} in {target}" if is_postgres_url(target)
            else f"state file {target}")


def _elsewhere(target: str) -> str:
    return "point [state] url at another database" if is_postgres_url(target) else "point [state] path at another file"


def test_a_schema_1_store_opens_with_its_records_intact_and_becomes_the_latest(state_target: str) -> None:
    target = _v1_store(state_target)
    before = _records(target)
    assert _version(target) == 1 and before["runs"] and before["audit"]

    store = open_store(target)
    try:
        assert schema_version(store) == SCHEMA_VERSION == 3
        done = runs.get(store, 1)
        assert done is not None and done["status"] == "succeeded" and done["owner"] is None
        assert done["plan"]["migrations"][0]["name"] == "20240101000000_add_users"
        assert [r["id"] for r in runs.open_runs(store)] == [2, 3]
        assert [(v["user"], v["decision"]) for v in approvals.live(store, 1)] == [
            ("U0BOB", "approve"), ("U0CAROL", "approve")]
        assert {item: t["checked"] for item, t in ticks.ticks(store, 1).items()} == {
            "rollback_plan": 1, "connection_pool": 1, "off_peak": 0}
        assert [e["action"] for e in audit.entries(store, run_id=1)] == ["request", "approve", "run", "succeeded"]
        # the rollback still running on staging keeps its lock: nobody else gets staging
        holder = locks.acquire(store, "staging", run_id=99, holder="U0DAVE")
        assert holder is not None and holder["run_id"] == 2
        audit.record(store, "U0DAVE", "approve", env="prod", run_id=3)  # and the store takes new rows
    finally:
        store.close()
    after = _records(target)
    old_runs = {r[0]: r for r in before["runs"]}
    assert [r[:len(old_runs[r[0]])] for r in after["runs"]] == before["runs"]  # plus the new columns, empty
    assert all(r[len(old_runs[r[0]]):] == (None, None) for r in after["runs"])
    assert after["audit"][:len(before["audit"])] == before["audit"] and len(after["audit"]) == len(before["audit"]) + 1
    assert {t: rows for t, rows in after.items() if t not in ("audit", "runs")} == {
        t: rows for t, rows in before.items() if t not in ("audit", "runs")}
    assert _version(target) == SCHEMA_VERSION
    assert V2_INDEXES | V3_COLUMNS <= set(_schema(target))


def test_sqlite_a_file_from_before_the_version_row_counts_as_schema_1(tmp_path: Path) -> None:
    path = _v1_store(str(tmp_path / "state.sqlite3"))
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta")
    conn.commit()
    conn.close()
    before = _records(path)

    open_store(path).close()

    assert {t: [r[:18] for r in rows] for t, rows in _records(path).items()} == before
    assert _version(path) == SCHEMA_VERSION


def test_sqlite_step_1_makes_exactly_the_schema_of_a_schema_1_file(tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh.sqlite3")
    raw = _raw(fresh)
    assert upgrade(raw, steps=STEPS[:1]) == 1
    raw.close()

    assert _schema(fresh) == _schema(_v1_store(str(tmp_path / "v1.sqlite3")))


def test_postgres_step_1_makes_the_tables_and_columns_of_a_schema_1_file(tmp_path: Path, pg_state_url: str) -> None:
    state_target = pg_state_url
    raw = PostgresStore(state_target)
    raw.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    assert upgrade(raw, steps=STEPS[:1]) == 1
    raw.close()
    sqlite_file = _v1_store(str(tmp_path / "v1.sqlite3"))

    def columns(target: str) -> set[str]:
        return {k for k in _schema(target) if "." in k}

    assert columns(state_target) == columns(sqlite_file)
    assert {k for k in _schema(state_target) if k.startswith("idx_")} == {
        k for k in _schema(sqlite_file) if k.startswith("idx_")}


def test_a_store_from_a_newer_migrabot_is_refused_and_left_as_it_was(state_target: str) -> None:
    target = _v1_store(state_target)
    raw = _raw(target)
    raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    raw.close()
    records, schema = _records(target), _schema(target)
    content = None if is_postgres_url(target) else Path(target).read_bytes()

    with pytest.raises(StateVersionError) as refused:
        open_store(target)

    assert str(refused.value) == (
        f"{_where(target)} was written by a newer migrabot (schema {SCHEMA_VERSION + 1}, this one knows "
        f"{SCHEMA_VERSION}): upgrade migrabot, or {_elsewhere(target)}")
    assert (_records(target), _schema(target)) == (records, schema)
    if content is not None:
        assert Path(target).read_bytes() == content


def test_a_store_of_another_program_is_refused(state_target: str) -> None:
    raw = _raw(state_target)
    if raw.dialect == "postgresql":
        raw.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    raw.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    raw.close()
    what = "schema" if is_postgres_url(state_target) else "file"

    with pytest.raises(StateVersionError, match=rf"is not a migrabot state {what} \(it holds the tables notes\)"):
        open_store(state_target)

    assert _records(state_target) == {"notes": []}


def test_postgres_the_applications_tables_are_never_touched(pg_state_url: str) -> None:
    """The state URL may name the application's own database: the bot keeps to its schema."""
    state_target = pg_state_url
    raw = _raw(state_target)
    raw.execute("CREATE TABLE public.runs (id INTEGER PRIMARY KEY, name TEXT)")
    raw.execute("INSERT INTO public.runs VALUES (1, 'the app''s row')")
    raw.close()

    store = open_store(state_target)
    runs.create(store, kind="migrate", env="staging", requested_by="U1", channel="C1")
    store.close()

    assert _query(state_target, "SELECT * FROM public.runs") == [{"id": 1, "name": "the app's row"}]
    assert [r["table_schema"] for r in _query(
        state_target, "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name = 'steps'")] == [
        PG_SCHEMA]


def test_a_new_store_gets_the_latest_schema(state_target: str) -> None:
    target = state_target if is_postgres_url(state_target) else str(Path(state_target).parent / "not-yet" / "s.db")

    store = open_store(target)
    runs.create(store, kind="migrate", env="staging", requested_by="U1", channel="C1")
    store.close()

    assert _version(target) == SCHEMA_VERSION
    assert V2_INDEXES | V3_COLUMNS <= set(_schema(target))
    memory = open_store(":memory:")
    assert schema_version(memory) == SCHEMA_VERSION


def test_opening_again_changes_nothing(state_target: str) -> None:
    target = _v1_store(state_target)
    open_store(target).close()
    schema, records = _schema(target), _records(target)

    open_store(target).close()

    assert (_schema(target), _records(target), _version(target)) == (schema, records, SCHEMA_VERSION)


def _waiting_for_upgrade_lock(target: str) -> bool:
    """PostgreSQL: another session waits for an advisory lock (the upgrade lock) right now."""
    return bool(_query(target, "SELECT 1 AS waiting FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


def test_two_processes_upgrading_at_once_do_each_step_once(state_target: str) -> None:
    """The bot and a CLI command (or two replicas) may start together: the second waits for the
    first and skips its work.

    The first is inside step 2 (holding the write lock, or the upgrade lock) while the second reads
    "schema 1" and asks for the lock; once it has it, the second must see schema 2 and not run step
    2 again (that would fail: its indexes exist).
    """
    target = _v1_store(state_target)
    if not is_postgres_url(target):
        _query(target, "PRAGMA journal_mode=WAL")  # as open_store leaves every file
    records = _records(target)
    first_in_step, second_waits = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_step_2(store: Store) -> None:
        first_in_step.set()
        assert second_waits.wait(timeout=10), "the second opener never asked for the lock"
        STEPS[1][1](store)

    def run(steps: Sequence[Step], on_sql: Callable[[str], None] | None) -> None:
        raw = _raw(target)
        if on_sql is not None and isinstance(raw, SqliteStore):
            raw.conn.set_trace_callback(on_sql)
        try:
            upgrade(raw, steps=steps)
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)
        finally:
            raw.close()

    def second_sees(sql: str) -> None:
        if sql.startswith("BEGIN IMMEDIATE"):
            second_waits.set()

    first = threading.Thread(target=run, args=((STEPS[0], (2, first_step_2)), None))
    first.start()
    assert first_in_step.wait(timeout=10)
    second = threading.Thread(target=run, args=(STEPS, second_sees))
    second.start()
    if is_postgres_url(target):
        deadline = time.monotonic() + 10
        while not _waiting_for_upgrade_lock(target) and time.monotonic() < deadline:
            time.sleep(0.02)
        second_waits.set()
    second.join(timeout=30)
    first.join(timeout=30)

    assert errors == []
    assert _version(target) == SCHEMA_VERSION
    assert {t: [r[:18] for r in rows] for t, rows in _records(target).items()} == records


def _half_done_then_broken(store: Store) -> None:
    store.execute("CREATE INDEX idx_audit_at ON audit (at)")
    store.execute("UPDATE runs SET status = 'broken'")
    raise RuntimeError("disk I/O error")


def test_a_failing_step_leaves_the_store_at_its_old_version(state_target: str) -> None:
    target = _v1_store(state_target)
    schema, records = _schema(target), _records(target)
    raw = _raw(target)

    with pytest.raises(StateVersionError) as failed:
        upgrade(raw, steps=(STEPS[0], (2, _half_done_then_broken)))
    raw.close()

    assert f"{_where(target)} could not be upgraded from schema 1 to 2" in str(failed.value)
    assert "disk I/O error" in str(failed.value) and "unchanged at schema 1" in str(failed.value)
    assert (_version(target), _schema(target), _records(target)) == (1, schema, records)
    open_store(target).close()  # the real steps still bring it up afterwards
    assert _version(target) == SCHEMA_VERSION


def test_sqlite_forgetting_by_age_and_finding_pending_schedules_read_an_index(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.sqlite3")
    try:
        plans = {sql: " ".join(r["detail"] for r in store.fetch_all(f"EXPLAIN QUERY PLAN {sql}", ["x"]))
                 for sql in ("DELETE FROM dedup WHERE at < ?", "DELETE FROM audit WHERE at < ?",
                             "SELECT * FROM schedules WHERE status = ?")}
    finally:
        store.close()
    assert plans == {
        "DELETE FROM dedup WHERE at < ?": "SEARCH dedup USING INDEX idx_dedup_at (at<?)",
        "DELETE FROM audit WHERE at < ?": "SEARCH audit USING INDEX idx_audit_at (at<?)",
        "SELECT * FROM schedules WHERE status = ?": "SEARCH schedules USING INDEX idx_schedules_status (status=?)",
    }


def test_steps_count_up_from_1_without_a_gap() -> None:
    assert [version for version, _ in STEPS] == list(range(1, len(STEPS) + 1))
    assert SCHEMA_VERSION == STEPS[-1][0]
