"""A run's life (state/runs.py): the transitions table walked move by move on a real state store,
on each backend (the ``store`` fixture of conftest.py: a SQLite file, a PostgreSQL database)."""

from __future__ import annotations

from collections import deque

import pytest

from state import locks, runs
from state.runs import FINAL, INITIAL, TRANSITIONS, RunStatus
from state.store import Store


def paths_from_start() -> dict[RunStatus, list[RunStatus]]:
    """The shortest way to every status the table reaches, starting from a status a run is created in."""
    paths = {s: [s] for s in INITIAL}
    todo = deque(sorted(INITIAL))
    while todo:
        here = todo.popleft()
        for nxt in sorted(TRANSITIONS[here]):
            if nxt not in paths:
                paths[nxt] = [*paths[here], nxt]
                todo.append(nxt)
    return paths


def walk(store: Store, path: list[RunStatus], env: str = "staging") -> int:
    """A run taken along ``path`` while holding ``env``'s lock; every move must succeed."""
    run_id = runs.create(store, kind="migrate", env=env, requested_by="U1", channel="C1", status=path[0])
    assert locks.acquire(store, env, run_id=run_id, holder="U1") is None
    for status in path[1:]:
        assert runs.transition(store, run_id, status), f"{path}: the move to {status} was refused"
    return run_id


def test_every_status_is_reachable() -> None:
    assert set(paths_from_start()) == set(RunStatus)


def test_the_table_names_every_status_and_final_ones_have_no_way_out() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    assert FINAL == {s for s in RunStatus if not TRANSITIONS[s]}
    assert not INITIAL & FINAL
    assert set(runs.OPEN) | FINAL == set(RunStatus)


@pytest.mark.parametrize("final", sorted(FINAL))
def test_every_final_status_frees_the_environment(store: Store, final: RunStatus) -> None:
    path = paths_from_start()[final]
    run_id = walk(store, path[:-1])
    assert locks.holder_of(store, "staging")["run_id"] == run_id  # type: ignore[index]  # held until the end
    assert runs.transition(store, run_id, final)
    assert locks.holder_of(store, "staging") is None
    assert runs.get(store, run_id)["status"] == final  # type: ignore[index]


def test_an_open_status_keeps_the_lock(store: Store) -> None:
    run_id = walk(store, [RunStatus.SCHEDULED, RunStatus.AWAITING, RunStatus.RUNNING])
    assert locks.holder_of(store, "staging")["run_id"] == run_id  # type: ignore[index]


@pytest.mark.parametrize("start", sorted(RunStatus))
def test_a_refused_transition_changes_nothing(store: Store, start: RunStatus) -> None:
    run_id = walk(store, paths_from_start()[start])
    before = (runs.get(store, run_id), locks.all_locks(store))
    for target in sorted(set(RunStatus) - TRANSITIONS[start]):
        assert runs.transition(store, run_id, target, error="should not be written") is False
        assert (runs.get(store, run_id), locks.all_locks(store)) == before, f"{start} -> {target}"


def test_a_move_happens_once(store: Store) -> None:
    """A double click or a retried request: the second identical move is refused."""
    run_id = walk(store, [RunStatus.AWAITING])
    assert runs.transition(store, run_id, RunStatus.RUNNING) is True
    assert runs.transition(store, run_id, RunStatus.RUNNING) is False


def test_only_from_narrows_but_never_widens_the_table(store: Store) -> None:
    run_id = walk(store, [RunStatus.SCHEDULED])
    assert runs.transition(store, run_id, RunStatus.CANCELLED, only_from=[RunStatus.AWAITING]) is False
    assert runs.get(store, run_id)["status"] == RunStatus.SCHEDULED  # type: ignore[index]
    with pytest.raises(ValueError, match="no move from"):
        runs.transition(store, run_id, RunStatus.AWAITING, only_from=[RunStatus.RUNNING])


def test_status_changes_only_through_transition(store: Store) -> None:
    run_id = walk(store, [RunStatus.AWAITING])
    with pytest.raises(ValueError, match="only through"):
        runs.update(store, run_id, status="succeeded")
    with pytest.raises(ValueError, match="a run starts as"):
        runs.create(store, kind="migrate", env="prod", requested_by="U1", channel="C1", status=RunStatus.RUNNING)


def test_the_lock_of_another_run_is_left_alone(store: Store) -> None:
    """A terminate run that bypassed the lock of a running migration ends without freeing it."""
    migration = walk(store, [RunStatus.AWAITING, RunStatus.RUNNING])
    terminate = runs.create(store, kind="terminate", env="staging", requested_by="U2", channel="C1")
    assert runs.transition(store, terminate, RunStatus.RUNNING)
    assert runs.transition(store, terminate, RunStatus.SUCCEEDED)
    assert locks.holder_of(store, "staging")["run_id"] == migration  # type: ignore[index]
