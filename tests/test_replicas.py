"""Three real `migrabot serve --http` replicas on one PostgreSQL state database.

Requests are spread round-robin over the replicas by the test (signed, over real HTTP), as a load
balancer would; the Slack stand-in is shared. Replicas are killed with SIGKILL, as a lost host is.
The leases are short (``leader_lease = "3s"``: a heartbeat each second) so the tests stay quick.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.simulator.local_slack import LocalSlack, Message
from bot.simulator.slack_requests import SlackDriver
from state import audit, runs, ticks
from state.store import Store, open_store
from tests import pgserver
from tests.botstack import ALICE, BOB, CAROL, CHANNEL, DAVE, GROUP, SECRET, USERS, applied, wait_for, write_migrations
from tests.test_migrate_restart import free_port

LEASE = 3.0
SLOW = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_slow": 'SELECT pg_sleep(3);\nALTER TABLE "users" ADD COLUMN "nick" TEXT;',
    "20240103000000_more": 'ALTER TABLE "users" ADD COLUMN "bio" TEXT;',
}
QUICK = {
    "20240101000000_init": 'CREATE TABLE "users" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);',
    "20240102000000_more": 'ALTER TABLE "users" ADD COLUMN "bio" TEXT;',
}


def config_text(tmp: Path, state_url: str, staging_url: str, prod_url: str) -> str:
    return f"""
[state]
url = "{state_url}"
leader_lease = "{LEASE:g}s"

[environments.staging]
database_url = "{staging_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
lock_timeout = "300ms"

[environments.prod]
database_url = "{prod_url}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
requires = ["staging"]
approvers = ["{BOB}", "{GROUP}"]
required_approvals = 2
lock_timeout = "300ms"
"""


@dataclass
class Replica:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    driver: SlackDriver
    log: Path

    async def health(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                    http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                return dict(await r.json())
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), timeout=10)


@dataclass
class Cluster:
    replicas: list[Replica]
    slack: LocalSlack
    state_url: str
    staging_url: str
    prod_url: str
    store: Store
    turn: int = field(default=0)

    def next(self) -> SlackDriver:
        """The driver of the next live replica, round-robin (a load balancer)."""
        live = [r for r in self.replicas if r.proc.returncode is None]
        self.turn += 1
        return live[self.turn % len(live)].driver

    def run_messages(self) -> list[Message]:
        return [m for m in self.slack.messages(CHANNEL) if " requested by " in m.text]

    def text(self, ts: str) -> str:
        msg = self.slack.message(CHANNEL, ts)
        assert msg is not None
        return msg.text + "\n" + str(msg.blocks)

    async def leader(self) -> Replica:
        async def find() -> Replica | None:
            for r in self.replicas:
                if r.proc.returncode is None and ((await r.health()) or {}).get("role") == "leader":
                    return r
            return None

        return await wait_for(find, timeout=LEASE * 4)

    async def tick_all(self, ts: str, user: str) -> None:
        """Tick every box, once the migrations' SQL is in the thread (the review item waits for it)."""
        await wait_for(lambda: self.sql_shown(ts))
        msg = self.slack.message(CHANNEL, ts)
        assert msg is not None
        values = [o["value"] for b in msg.blocks if b.get("type") == "actions" for e in b["elements"]
                  if e.get("type") == "checkboxes" for o in e["options"]]
        await self.next().check(user, CHANNEL, ts, "checklist", values)

    def sql_shown(self, ts: str) -> bool:
        """The SQL is in the thread and the run message asks for the review (what a person waits for)."""
        msg = self.slack.message(CHANNEL, ts)
        return bool(msg and msg.replies and "read the SQL in the thread, then tick" in str(msg.blocks))


async def start_replica(name: str, config_file: Path, slack_url: str, tmp: Path, slack: LocalSlack) -> Replica:
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SECRET,
           "MIGRABOT_SLACK_API_URL": slack_url, "MIGRABOT_REPLICA": name, "MIGRABOT_LOG": "1"}
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(config_file), env=env, stdout=out, stderr=subprocess.STDOUT)
    replica = Replica(name, port, proc, SlackDriver(f"http://127.0.0.1:{port}/slack/events", SECRET, slack,
                                                    timeout=30), log)
    await wait_for(lambda: _ok(replica), timeout=30)
    return replica


async def _ok(replica: Replica) -> bool:
    if replica.proc.returncode is not None:
        raise AssertionError(f"{replica.name} exited: {replica.log.read_text()[-2000:]}")
    return bool((await replica.health() or {}).get("ok"))


@asynccontextmanager
async def cluster(tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str,
                  state_url: str, migrations: dict[str, str], count: int = 3) -> AsyncIterator[Cluster]:
    write_migrations(tmp_path / "migrations", migrations)
    staging_url, prod_url = pg_server.url_for(database), pg_server.url_for(prod_database)
    config_file = tmp_path / "migrabot.toml"
    config_file.write_text(config_text(tmp_path, state_url, staging_url, prod_url))
    slack = LocalSlack(users=USERS, channels={CHANNEL: "deploys"}, usergroups={GROUP: [CAROL, DAVE]})
    slack_url = await slack.start()
    replicas: list[Replica] = []
    store = None
    try:
        for i in range(count):  # one after the other: the first one leads
            replicas.append(await start_replica(f"replica-{i}", config_file, slack_url, tmp_path, slack))
        store = open_store(state_url, replica="test-reader")
        yield Cluster(replicas, slack, state_url, staging_url, prod_url, store)
    finally:
        for r in replicas:
            if r.proc.returncode is None:
                r.proc.kill()
                await r.proc.wait()
            await r.driver.close()
            print(f"--- log of {r.name} (shown when the test fails)\n{r.log.read_text()[-4000:]}")
        if store is not None:
            store.close()
        print("--- Slack calls\n" + "\n".join(f"{c.method} {c.ok} {str(c.args.get('text'))[:300]}"
                                                for c in slack.calls[-40:]))
        await slack.stop()


@pytest.fixture
def migrations() -> dict[str, str]:
    return QUICK


@pytest.fixture
async def three(tmp_path: Path, pg_server: pgserver.Server, database: str, prod_database: str,
                pg_state_url: str, migrations: dict[str, str]) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path, pg_server, database, prod_database, pg_state_url, migrations) as c:
        yield c


async def _new_run_message(c: Cluster, before: int) -> Message:
    await wait_for(lambda: len(c.run_messages()) > before and "checkboxes" in str(c.run_messages()[before].blocks))
    return c.run_messages()[before]


async def test_a_prod_run_whose_every_step_reaches_another_replica_succeeds_once(three: Cluster) -> None:
    c = three
    # staging first (prod requires it): command, ticks and Run on three different replicas
    await c.next().slash(ALICE, "/migrate", "staging", CHANNEL)
    staging = await _new_run_message(c, 0)
    await c.tick_all(staging.ts, ALICE)
    await wait_for(lambda: "'action_id': 'run'" in c.text(staging.ts))
    await c.next().click(ALICE, CHANNEL, staging.ts, "run")
    await wait_for(lambda: "Succeeded" in c.text(staging.ts), timeout=60)

    drivers = [r.driver for r in c.replicas]
    await drivers[0].slash(BOB, "/migrate", "prod", CHANNEL)
    prod = await _new_run_message(c, 1)
    await drivers[1].react(CAROL, CHANNEL, prod.ts, "white_check_mark")  # approval by reaction
    await wait_for(lambda: "Approvals* (1/2)" in c.text(prod.ts))
    await drivers[2].click(DAVE, CHANNEL, prod.ts, "approve")  # and by button
    await wait_for(lambda: "Approvals* (2/2)" in c.text(prod.ts))
    await wait_for(lambda: c.sql_shown(prod.ts))
    msg = c.slack.message(CHANNEL, prod.ts)
    assert msg is not None
    values = [o["value"] for b in msg.blocks if b.get("type") == "actions" for e in b["elements"]
              if e.get("type") == "checkboxes" for o in e["options"]]
    await drivers[0].check(BOB, CHANNEL, prod.ts, "checklist", values)
    await wait_for(lambda: "'action_id': 'run'" in c.text(prod.ts))
    await drivers[1].click(BOB, CHANNEL, prod.ts, "run")  # opens the typed confirmation
    (view,) = await wait_for(lambda: c.slack.open_views(BOB))
    answer = await drivers[2].submit_view(BOB, view.id, {"confirm_input": {"value": "prod"}})
    assert answer.status == 200 and not answer.body
    await wait_for(lambda: "Succeeded" in c.text(prod.ts), timeout=60)

    assert await applied(c.prod_url) == list(QUICK)
    prod_runs = [r for r in runs.history(c.store, "prod")]
    assert [r["status"] for r in prod_runs] == ["succeeded"]
    assert prod_runs[0]["owner"] in {r.name for r in c.replicas}
    await asyncio.sleep(LEASE)  # nothing happens twice afterwards (no second executor, no second result)
    actions = [e["action"] for e in audit.entries(c.store, run_id=prod_runs[0]["id"])]
    assert actions.count("succeeded") == 1 and actions.count("run") == 1, actions
    assert await applied(c.prod_url) == list(QUICK)
    assert await prisma_rows(c.prod_url) == len(QUICK)  # each migration written once
    assert [r for r in c.slack.errors() if r.method.startswith("ack.")] == []
    health = [await r.health() for r in c.replicas]
    assert sorted(h["role"] for h in health if h) == ["follower", "follower", "leader"]
    assert all(h and h["state"] == {"backend": "postgresql", "reachable": True} for h in health)


async def test_fifty_concurrent_commands_open_one_run_and_the_rest_hear_who_holds_the_lock(three: Cluster) -> None:
    c = three
    people = [ALICE, BOB, CAROL, DAVE]
    drivers = [r.driver for r in c.replicas]
    answers = await asyncio.gather(*(drivers[i % 3].slash(people[i % 4], "/migrate", "staging", CHANNEL)
                                     for i in range(50)))
    assert [a.status for a in answers] == [200] * 50

    def told() -> list[str]:
        return [t for p in people for m in c.slack.ephemerals(CHANNEL, p) if "is locked by" in (t := m.text)]

    await wait_for(lambda: len(told()) == 49, timeout=60)
    await _new_run_message(c, 0)
    (run,) = runs.open_runs(c.store, "staging")
    assert all(f"run #{run['id']}" in t for t in told())
    assert len(c.run_messages()) == 1
    assert [r for r in c.slack.errors() if r.method.startswith("ack.")] == []


async def test_the_same_slack_retry_reaching_two_replicas_is_handled_once(three: Cluster) -> None:
    c = three
    first, second = c.replicas[0].driver, c.replicas[1].driver
    await first.slash(ALICE, "/migrate", "staging", CHANNEL)
    assert first.last_request is not None
    answer = await second.replay(first.last_request, retry_num=1)  # Slack retried on another connection
    assert answer.status == 200
    await _new_run_message(c, 0)
    await asyncio.sleep(1)
    assert len(c.run_messages()) == 1 and len(runs.history(c.store, "staging")) == 1
    assert not any("is locked by" in m.text for m in c.slack.ephemerals(CHANNEL, ALICE))


@pytest.mark.parametrize("migrations", [SLOW])
async def test_killing_the_replica_executing_a_run_gets_it_explained_by_another_never_rerun(
        three: Cluster) -> None:
    c = three
    leader = await c.leader()
    owner = next(r for r in c.replicas if r is not leader)
    await leader.driver.slash(ALICE, "/migrate", "staging", CHANNEL)
    msg = await _new_run_message(c, 0)
    await c.tick_all(msg.ts, ALICE)
    await wait_for(lambda: "'action_id': 'run'" in c.text(msg.ts))
    await owner.driver.click(ALICE, CHANNEL, msg.ts, "run")
    await wait_for(lambda: (runs.open_runs(c.store, "staging") or [{}])[0].get("current_step")
                   == "migration:20240102000000_slow", timeout=60)
    (run,) = runs.open_runs(c.store, "staging")
    assert run["owner"] == owner.name

    await owner.kill()
    killed_at = time.monotonic()
    await wait_for(lambda: "stopped answering" in c.text(msg.ts), timeout=LEASE + LEASE / 3 + 20)
    took = time.monotonic() - killed_at
    text = c.text(msg.ts)
    assert f"the replica executing this run ({owner.name}) stopped answering" in text
    assert "nothing was re-run" in text and "applied: 20240101000000_init" in text
    done = runs.get(c.store, run["id"])
    assert done is not None and done["status"] == "interrupted"
    await asyncio.sleep(LEASE)
    # the statement in flight when the owner died may finish on the server (the explanation says the
    # migration lock was still held); nothing after it ran, and nothing ran twice
    assert "20240103000000_more" not in await applied(c.staging_url)
    assert await prisma_rows(c.staging_url) == len(await applied(c.staging_url))
    print(f"explained {took:.1f}s after the kill (lease {LEASE:g}s)")

    # the environment is usable afterwards: a new run opens and finishes the work
    before = len(c.run_messages())
    await c.next().slash(ALICE, "/migrate", "staging", CHANNEL)
    again = await _new_run_message(c, before)
    await c.tick_all(again.ts, ALICE)
    await wait_for(lambda: "'action_id': 'run'" in c.text(again.ts))
    await c.next().click(ALICE, CHANNEL, again.ts, "run")
    await wait_for(lambda: "Succeeded" in c.text(again.ts), timeout=60)
    assert await applied(c.staging_url) == list(SLOW)


@pytest.mark.parametrize("migrations", [SLOW])
async def test_abort_reaching_another_replica_stops_the_run_where_it_executes(three: Cluster) -> None:
    c = three
    owner, other = c.replicas[1], c.replicas[2]
    await owner.driver.slash(ALICE, "/migrate", "staging", CHANNEL)
    msg = await _new_run_message(c, 0)
    await c.tick_all(msg.ts, ALICE)
    await wait_for(lambda: "'action_id': 'run'" in c.text(msg.ts))
    await owner.driver.click(ALICE, CHANNEL, msg.ts, "run")
    await wait_for(lambda: (runs.open_runs(c.store, "staging") or [{}])[0].get("current_step")
                   == "migration:20240102000000_slow", timeout=60)

    await other.driver.click(ALICE, CHANNEL, msg.ts, "abort")  # reaches a replica that does not execute it

    await wait_for(lambda: (runs.get(c.store, 1) or {}).get("status") == "aborted", timeout=30)
    run = runs.get(c.store, 1)
    assert run is not None and run["owner"] == owner.name and run["abort_requested"] == 1
    # the owner stopped at the safe point after the migration in flight: the next one never ran
    assert await applied(c.staging_url) == ["20240101000000_init", "20240102000000_slow"]
    await wait_for(lambda: "aborted" in c.slack.message(CHANNEL, msg.ts).text)  # type: ignore[union-attr]


async def test_killing_the_leader_a_scheduled_run_still_fires_once_on_the_new_leader(three: Cluster) -> None:
    c = three
    leader = await c.leader()
    follower = next(r for r in c.replicas if r is not leader)
    await follower.driver.slash(ALICE, "/migrate", "staging in 8s", CHANNEL)
    msg = await _new_run_message(c, 0)
    await c.tick_all(msg.ts, ALICE)
    await wait_for(lambda: all(t["checked"] for t in _ticks(c, msg.ts)))
    await asyncio.sleep(LEASE / 3 + 0.5)  # the leader picked the start up from state
    await leader.kill()

    new_leader = await c.leader()
    assert new_leader is not leader
    await wait_for(lambda: "Succeeded" in c.text(msg.ts), timeout=40)
    await asyncio.sleep(LEASE)
    stored = c.slack.message(CHANNEL, msg.ts)
    assert stored is not None
    assert sum("is starting now" in r.text for r in stored.replies) == 1
    assert await applied(c.staging_url) == list(QUICK)
    (run,) = runs.history(c.store, "staging")
    assert run["status"] == "succeeded" and run["owner"] == new_leader.name


async def prisma_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM _prisma_migrations"))
    finally:
        await conn.close()


def _ticks(c: Cluster, ts: str) -> list[dict[str, Any]]:
    run = runs.by_message(c.store, CHANNEL, ts)
    if run is None:
        return [{"checked": 0}]
    return list(ticks.ticks(c.store, run["id"]).values()) or [{"checked": 0}]
