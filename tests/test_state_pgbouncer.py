"""PostgreSQL state through a real pgBouncer in session mode, and what `/healthz` says when it goes away."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.app import build_app, http_application
from bot.config import check_config_text
from state import dedup, locks, runs
from state.leader import Lease
from state.runs import RunStatus
from state.store import open_store
from tests import pgserver
from tests.pgbouncer_fixture import PgBouncer, _binary


@pytest.fixture
def session_bouncer(pg_server: pgserver.Server) -> Iterator[PgBouncer]:
    """A pgBouncer pooling in session mode (the mode the state store and its leader lock need)."""
    binary = _binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer); this test needs a real one")
    if pg_server.kind == "embedded":
        pytest.skip("the embedded PostgreSQL has no TCP port for pgBouncer to point at")
    bouncer = PgBouncer(binary, pg_server.admin_url)
    ini = bouncer.dir / "pgbouncer.ini"
    ini.write_text(ini.read_text().replace("pool_mode = transaction", "pool_mode = session"))
    if os.geteuid() == 0:
        os.chown(ini, *(lambda st: (st.st_uid, st.st_gid))(bouncer.dir.stat()))
    bouncer.start()
    yield bouncer
    bouncer.cleanup()


def test_the_state_store_and_the_leader_lease_work_through_pgbouncer(
        session_bouncer: PgBouncer, pg_state_url: str) -> None:
    url = session_bouncer.url_for(pg_state_url.rsplit("/", 1)[1])
    a, b = open_store(url, replica="replica-a"), open_store(url, replica="replica-b")
    first, second = Lease(a, seconds=3), Lease(b, seconds=3)
    try:
        run_id = runs.create(a, kind="migrate", env="staging", requested_by="U1", channel="C1")
        assert locks.acquire(a, "staging", run_id=run_id, holder="U1") is None
        assert locks.acquire(b, "staging", run_id=run_id + 1, holder="U2")["run_id"] == run_id  # type: ignore[index]
        assert runs.transition(b, run_id, RunStatus.RUNNING) and not runs.transition(a, run_id, RunStatus.RUNNING)
        assert dedup.first_time(a, "k") and not dedup.first_time(b, "k")

        assert first.renew() and not second.renew()
        first.release()  # pgBouncer resets the server session it goes back to (DISCARD ALL frees the lock)
        deadline = time.monotonic() + 5
        while not second.renew() and time.monotonic() < deadline:
            time.sleep(0.1)  # the next heartbeats
        assert second.held and not first.renew()
    finally:
        first.release()
        second.release()
        a.close()
        b.close()


async def test_healthz_says_when_the_state_database_cannot_be_reached_and_recovers(
        session_bouncer: PgBouncer, pg_state_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = session_bouncer.url_for(pg_state_url.rsplit("/", 1)[1])
    config, problems, _ = check_config_text(
        f'[state]\nurl = "{url}"\n\n[environments.staging]\ndatabase_url = "{pg_state_url}"\n',
        environ={}, base_dir=tmp_path)
    assert config is not None, problems
    store = open_store(config.state_target, replica="replica-h")
    _app, wf = build_app(config, store, token="xoxb-healthz-test", signing_secret="healthz-test-signing-secret-0123")
    runner = web.AppRunner(http_application(_app, wf), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    health = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"

    async def get() -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as http, http.get(health) as r:
            return r.status, await r.json()

    try:
        status, body = await get()
        assert status == 200 and body["role"] == "follower" and body["replica"] == "replica-h"
        assert body["state"] == {"backend": "postgresql", "reachable": True}

        caplog.set_level(logging.WARNING, logger="state.store")
        session_bouncer.stop()  # the state database goes away
        status, body = await get()
        assert status == 503 and body["state"] == {"backend": "postgresql", "reachable": False}
        assert "state database" in str(body["error"])

        session_bouncer.start()
        status, body = await get()
        assert status == 200 and body["state"] == {"backend": "postgresql", "reachable": True}
        assert len([r for r in caplog.records if "connection lost" in r.getMessage()]) == 1
    finally:
        await wf.close()
        await runner.cleanup()
        store.close()
