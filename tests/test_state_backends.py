"""One set of state modules on both backends, and what several replicas sharing one store rely on.

* every state module's docstring examples hold on SQLite and on PostgreSQL;
* two replicas (two stores on one database) racing: a Slack retry, the environment lock, a run's
  start, a double vote each happen once;
* PostgreSQL only: a lost connection is re-made with one log line, a stuck server fails a call
  within the statement timeout, the leader lease is held by one replica and passes on when it dies,
  and a run whose owner went silent is claimed once.
"""

from __future__ import annotations

import doctest
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

import state.store
from bot.config import check_config_text
from state import approvals, dedup, locks, runs
from state.leader import Lease
from state.runs import RunStatus
from state.store import PG_SCHEMA, PostgresStore, Store, is_postgres_url, open_store

STATE_MODULES = ["state.approvals", "state.audit", "state.dedup", "state.leader", "state.locks", "state.runs",
                 "state.schedules", "state.steps", "state.store", "state.ticks"]
T = TypeVar("T")


@pytest.mark.parametrize("name", STATE_MODULES)
def test_docstring_examples_hold_on_both_backends(name: str, state_target: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples open ``:memory:``; here each such store is a fresh one on the backend under test."""
    real = state.store.open_store

    def fresh(target: Any, **kw: Any) -> Store:
        if str(target) != ":memory:":
            return real(target, **kw)
        if is_postgres_url(state_target):
            with psycopg.connect(state_target, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
            return real(state_target, **kw)
        Path(state_target).unlink(missing_ok=True)
        return real(state_target, **kw)

    monkeypatch.setattr(state.store, "open_store", fresh)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} are wrong on {state_target}"


@pytest.fixture
def two_replicas(state_target: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one state database, as two replicas of ``migrabot serve`` have."""
    a, b = open_store(state_target, replica="replica-a"), open_store(state_target, replica="replica-b")
    yield a, b
    a.close()
    b.close()


def race(stores: tuple[Store, Store], times: int, act: Callable[[Store, int], T]) -> list[T]:
    """``act(store, i)`` from ``times`` threads at once, alternating between the two replicas."""
    barrier = threading.Barrier(times)
    results: list[Any] = [None] * times

    def one(i: int) -> None:
        barrier.wait(timeout=10)
        results[i] = act(stores[i % 2], i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_a_slack_retry_reaching_both_replicas_is_handled_once(two_replicas: tuple[Store, Store]) -> None:
    firsts = race(two_replicas, 20, lambda s, _i: dedup.first_time(s, "event:Ev123"))
    assert firsts.count(True) == 1


def test_the_environment_lock_has_one_holder_across_replicas(two_replicas: tuple[Store, Store]) -> None:
    held = race(two_replicas, 20, lambda s, i: locks.acquire(s, "staging", run_id=100 + i, holder=f"U{i}"))
    winners = [i for i, h in enumerate(held) if h is None]
    assert len(winners) == 1
    assert {h["run_id"] for h in held if h is not None} == {100 + winners[0]}  # the others are told who holds it


def test_a_run_starts_once_and_its_owner_is_the_replica_that_started_it(two_replicas: tuple[Store, Store]) -> None:
    a, _b = two_replicas
    run_id = runs.create(a, kind="migrate", env="staging", requested_by="U1", channel="C1")
    moved = race(two_replicas, 10, lambda s, _i: runs.transition(s, run_id, RunStatus.RUNNING))
    assert moved.count(True) == 1
    winner = two_replicas[moved.index(True) % 2]
    assert runs.get(a, run_id)["owner"] == winner.replica  # type: ignore[index]


def test_a_button_and_a_reaction_on_two_replicas_count_once(two_replicas: tuple[Store, Store]) -> None:
    a, _b = two_replicas
    run_id = runs.create(a, kind="migrate", env="prod", requested_by="U1", channel="C1")
    counted = race(two_replicas, 8, lambda s, i: approvals.vote(s, run_id, "U2", "approve",
                                                                 via="button" if i % 2 else "reaction"))
    assert counted.count(True) == 1
    assert [v["user"] for v in approvals.live(a, run_id)] == ["U2"]


def test_a_silent_owners_run_is_claimed_once(two_replicas: tuple[Store, Store]) -> None:
    a, b = two_replicas
    run_id = runs.create(a, kind="migrate", env="staging", requested_by="U1", channel="C1")
    assert runs.transition(a, run_id, RunStatus.RUNNING)
    runs.update(a, run_id, heartbeat_at="2020-01-01T00:00:00.000+00:00")  # replica-a went silent long ago
    cutoff = state.store.now_iso()
    assert [r["id"] for r in runs.stale_running(b, cutoff)] == [run_id]

    claimed = race(two_replicas, 6, lambda s, _i: runs.claim(s, run_id, older_than=cutoff))

    assert claimed.count(True) == 1
    assert runs.stale_running(b, cutoff) == []
    owner = runs.get(b, run_id)["owner"]  # type: ignore[index]
    assert owner in ("replica-a", "replica-b")
    silent = a if owner == "replica-b" else b
    assert runs.heartbeat(silent) == 0  # the replica it was taken from no longer keeps it alive


def test_a_process_executing_a_run_keeps_it_alive_until_it_stops(state_target: str) -> None:
    """The replica (or CLI command) that moved a run to running stamps its heartbeat; a dead one does not."""
    store, watcher = open_store(state_target, replica="executor"), open_store(state_target, replica="leader")
    try:
        runs.keep_alive(store, every=0.1)
        run_id = runs.create(store, kind="migrate", env="staging", requested_by="U1", channel="C1")
        assert runs.transition(store, run_id, RunStatus.RUNNING)
        first = runs.get(watcher, run_id)["heartbeat_at"]  # type: ignore[index]
        beat = wait_until(lambda: (runs.get(watcher, run_id) or {}).get("heartbeat_at", "") > first)
        assert beat and runs.stale_running(watcher, first) == []
        keeper = store.keeper
        store.close()
        assert keeper is not None
        keeper.join(timeout=5)
        assert not keeper.is_alive()
        last = runs.get(watcher, run_id)["heartbeat_at"]  # type: ignore[index]
        time.sleep(0.3)
        assert runs.get(watcher, run_id)["heartbeat_at"] == last  # type: ignore[index]
        assert [r["id"] for r in runs.stale_running(watcher, state.store.now_iso())] == [run_id]
    finally:
        store.close()
        watcher.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


# --- PostgreSQL only ---------------------------------------------------------------------------------


def _terminate(url: str, application_name: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = %s AND datname = current_database()",
                             [application_name]).fetchall()
    return len(rows)


def test_a_lost_connection_is_made_again_with_one_log_line(pg_state_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(pg_state_url)
    try:
        run_id = runs.create(store, kind="migrate", env="staging", requested_by="U1", channel="C1")
        assert _terminate(pg_state_url, "migrabot-state") == 1  # as a server restart does
        caplog.set_level(logging.WARNING, logger="state.store")

        assert runs.get(store, run_id)["env"] == "staging"  # type: ignore[index]
        assert dedup.first_time(store, "after-restart")

        lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
        assert len(lost) == 1 and "reconnecting to state schema migrabot_state" in lost[0]
    finally:
        store.close()


def test_postgres_keeps_dedup_keys_out_of_the_wal_and_everything_else_in_it(pg_state_url: str) -> None:
    open_store(pg_state_url).close()
    with psycopg.connect(pg_state_url) as conn:
        rows = conn.execute("SELECT relname, relpersistence FROM pg_class c JOIN pg_namespace n"
                            " ON n.oid = c.relnamespace WHERE nspname = %s AND relkind = 'r'", [PG_SCHEMA]).fetchall()
    assert {name for name, persistence in rows if persistence == "u"} == {"dedup"}
    assert len(rows) == 9


def test_a_stuck_state_database_fails_a_call_within_the_statement_timeout(pg_state_url: str) -> None:
    open_store(pg_state_url).close()
    store = PostgresStore(pg_state_url, statement_timeout=0.5)
    with psycopg.connect(pg_state_url) as blocker:
        blocker.execute(f"LOCK TABLE {PG_SCHEMA}.dedup IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            dedup.first_time(store, "blocked")
        waited = time.monotonic() - started
        blocker.rollback()
    store.close()
    assert waited < 5, f"the call waited {waited:.1f}s"


def test_the_leader_lease_has_one_holder_and_passes_on_when_it_dies(pg_state_url: str) -> None:
    store = open_store(pg_state_url)
    first, second = Lease(store, seconds=3), Lease(store, seconds=3)
    try:
        assert first.renew() is True
        assert second.renew() is False and first.renew() is True  # the leader keeps it
        with psycopg.connect(pg_state_url, autocommit=True) as admin:  # the leader's process dies
            assert len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                                     " AND granted AND database = (SELECT oid FROM pg_database"
                                     " WHERE datname = current_database())").fetchall()) == 1

        assert first.renew() is False  # it finds out at its next heartbeat and steps down
        assert second.renew() is True
        assert first.renew() is False
        second.release()
        assert first.renew() is True  # a clean stop hands it over at once
    finally:
        first.release()
        second.release()
        store.close()


def test_sqlite_state_is_always_its_own_leader(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.sqlite3")
    assert Lease(store).renew() and Lease(store).renew()
    store.close()


# --- configuration -------------------------------------------------------------------------------------


def _config(state: str, environ: dict[str, str]) -> tuple[Any, list[str]]:
    text = f'[state]\n{state}\n\n[environments.staging]\ndatabase_url = "postgresql://app@db/app"\n'
    config, problems, _ = check_config_text(text, environ=environ, base_dir=Path("/tmp"))
    return config, [f"{p.path}: {p.message}" for p in problems]


def test_the_state_url_comes_from_the_environment_and_selects_postgresql() -> None:
    url = "postgresql://migrabot@db:5432/app"
    config, problems = _config('url = "env:MIGRABOT_STATE_URL"', {"MIGRABOT_STATE_URL": url})
    assert problems == [] and config.state_target == url and config.leader_lease == 15.0
    config, problems = _config('path = "state.db"', {})
    assert problems == [] and config.state_target == Path("/tmp/state.db")


def test_a_bad_state_url_or_lease_is_refused_with_the_reason() -> None:
    _, problems = _config('url = "env:MIGRABOT_STATE_URL"', {})
    assert problems == ["state.url: environment variable MIGRABOT_STATE_URL is not set"]
    _, problems = _config('url = "mysql://db/app"', {})
    assert len(problems) == 1 and problems[0].startswith("state.url: ")
    _, problems = _config('leader_lease = "200ms"', {})
    assert problems == ["state.leader_lease: at least 1 s: a shorter lease flaps on a busy host"]
