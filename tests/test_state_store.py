"""The bot's own state file upgrades on open: older files keep their records, newer ones are refused.

``fixtures/state_v1.sql`` is a state file made by the code of schema 1 (runs, votes, ticks, audit rows,
a held lock, a pending schedule), dumped as SQL so that no binary file is committed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from state import approvals, audit, locks, runs, ticks
from state.store import SCHEMA_VERSION, STEPS, StateVersionError, Step, open_store, schema_version, upgrade

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1.sql"
V2_INDEXES = {"idx_audit_at", "idx_dedup_at", "idx_schedules_status"}


def _v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text())
    conn.close()
    return path


def _query(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _records(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but ``meta``, in a stable order."""
    tables = [r[0] for r in _query(path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'")]
    return {t: sorted(_query(path, f"SELECT * FROM [{t}]"), key=repr) for t in tables}


def _schema(path: Path) -> dict[str, str]:
    return dict(_query(path, "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def _version(path: Path) -> int:
    return int(_query(path, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0])


def test_a_schema_1_file_opens_with_its_records_intact_and_becomes_the_latest(tmp_path: Path) -> None:
    path = _v1_file(tmp_path)
    before = _records(path)
    assert _version(path) == 1 and before["runs"] and before["audit"]

    store = open_store(path)
    try:
        assert schema_version(store.db) == SCHEMA_VERSION == 2
        done = runs.get(store, 1)
        assert done is not None and done["status"] == "succeeded"
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
        audit.record(store, "U0DAVE", "approve", env="prod", run_id=3)  # and the file takes new rows
    finally:
        store.close()
    after = _records(path)
    assert after["audit"][:len(before["audit"])] == before["audit"] and len(after["audit"]) == len(before["audit"]) + 1
    assert {t: rows for t, rows in after.items() if t != "audit"} == {
        t: rows for t, rows in before.items() if t != "audit"}
    assert _version(path) == 2
    assert V2_INDEXES <= set(_schema(path))


def test_a_file_from_before_the_version_row_counts_as_schema_1(tmp_path: Path) -> None:
    path = _v1_file(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta")
    conn.commit()
    conn.close()
    before = _records(path)

    open_store(path).close()

    assert _records(path) == before
    assert _version(path) == SCHEMA_VERSION


def test_step_1_makes_exactly_the_schema_of_a_schema_1_file(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.sqlite3"
    db = sqlite_utils.Database(sqlite3.connect(fresh, isolation_level=None))
    assert upgrade(db, steps=STEPS[:1]) == 1
    db.conn.close()

    assert _schema(fresh) == _schema(_v1_file(tmp_path))


def test_a_file_from_a_newer_migrabot_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = _v1_file(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    content, files = path.read_bytes(), sorted(tmp_path.iterdir())

    with pytest.raises(StateVersionError) as refused:
        open_store(path)

    assert str(refused.value) == (
        f"state file {path} was written by a newer migrabot (schema {SCHEMA_VERSION + 1}, this one knows "
        f"{SCHEMA_VERSION}): upgrade migrabot, or point [state] path at another file")
    assert path.read_bytes() == content
    assert sorted(tmp_path.iterdir()) == files


def test_a_file_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    content = path.read_bytes()

    with pytest.raises(StateVersionError, match=r"is not a migrabot state file \(it holds the tables notes\)"):
        open_store(path)

    assert path.read_bytes() == content


def test_a_new_file_gets_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "state.sqlite3"

    store = open_store(path)
    runs.create(store, kind="migrate", env="staging", requested_by="U1", channel="C1")
    store.close()

    assert _version(path) == SCHEMA_VERSION
    assert V2_INDEXES <= set(_schema(path))
    memory = open_store(":memory:")
    assert schema_version(memory.db) == SCHEMA_VERSION


def test_opening_again_changes_nothing(tmp_path: Path) -> None:
    path = _v1_file(tmp_path)
    open_store(path).close()
    schema, records = _schema(path), _records(path)

    open_store(path).close()

    assert (_schema(path), _records(path), _version(path)) == (schema, records, SCHEMA_VERSION)


def test_two_processes_upgrading_at_once_do_each_step_once(tmp_path: Path) -> None:
    """The bot and a CLI command may start together: the second waits for the first and skips its work.

    The first is inside step 2 (holding the write lock) while the second reads "schema 1" and asks
    for the lock; once it has it, the second must see schema 2 and not run step 2 again (that
    would fail: its indexes exist).
    """
    path = _v1_file(tmp_path)
    _query(path, "PRAGMA journal_mode=WAL")  # as open_store leaves every file
    records = _records(path)
    first_in_step, second_waits = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_step_2(db: sqlite_utils.Database) -> None:
        first_in_step.set()
        assert second_waits.wait(timeout=10), "the second opener never asked for the write lock"
        STEPS[1][1](db)

    def second_sees(sql: str) -> None:
        if sql.startswith("BEGIN IMMEDIATE"):
            second_waits.set()

    def run(steps: Sequence[Step], on_sql: Callable[[str], None] | None) -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        conn.set_trace_callback(on_sql)
        try:
            upgrade(sqlite_utils.Database(conn), path=str(path), steps=steps)
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)
        finally:
            conn.close()

    first = threading.Thread(target=run, args=((STEPS[0], (2, first_step_2)), None))
    first.start()
    assert first_in_step.wait(timeout=10)
    run(STEPS, second_sees)
    first.join(timeout=30)

    assert errors == []
    assert (_version(path), _records(path)) == (SCHEMA_VERSION, records)


def _half_done_then_broken(db: sqlite_utils.Database) -> None:
    db.table("audit").create_index(["at"])
    db.execute("UPDATE runs SET status = 'broken'")
    raise RuntimeError("disk I/O error")


def test_a_failing_step_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    path = _v1_file(tmp_path)
    schema, records = _schema(path), _records(path)
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))

    with pytest.raises(StateVersionError) as failed:
        upgrade(db, path=str(path), steps=(STEPS[0], (2, _half_done_then_broken)))
    db.conn.close()

    assert f"state file {path} could not be upgraded from schema 1 to 2" in str(failed.value)
    assert "disk I/O error" in str(failed.value) and "unchanged at schema 1" in str(failed.value)
    assert (_version(path), _schema(path), _records(path)) == (1, schema, records)
    open_store(path).close()  # the real steps still bring it up afterwards
    assert _version(path) == SCHEMA_VERSION


def test_forgetting_by_age_and_finding_pending_schedules_read_an_index(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.sqlite3")
    try:
        plans = {sql: " ".join(r["detail"] for r in store.db.query(f"EXPLAIN QUERY PLAN {sql}", ["x"]))
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
