"""Replicas: ack latency with PostgreSQL state on 3 replicas against SQLite state on 1, and failover time.

    python -m bench.replicas [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--n 50]
                             [--rounds 3] [--lease 15]

Real ``migrabot serve --http`` processes; the Slack stand-in and the people (signed requests over
loopback) are this process. Two set-ups, one after the other in the same run:

* **sqlite**: one replica, ``[state] path`` (the default);
* **postgresql**: three replicas on one ``[state] url``, requests spread round-robin.

Each round fires ``--n`` concurrent ``/migrate staging`` from different people (one opens the run,
the others are told who holds the lock: every ack writes a de-duplication key to the state), waits
until the follow-up work is done, and aborts the run. Reported: p50 and p99 of the HTTP response
time per set-up, and PostgreSQL's p99 as a ratio of SQLite's. Targets: p99 < 100 ms, <= 1.5x.

Failover: a run executing a slow migration on a follower replica, which is killed (SIGKILL); the
time until another replica has posted its explanation is reported, against the lease (``--lease``,
a third of it between heartbeats), which bounds it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from actions.db import quote_ident, with_database
from bench.common import percentile
from bot.simulator.local_slack import LocalSlack, Message
from bot.simulator.slack_requests import SlackDriver

SECRET = "bench-replicas-signing-secret-0123456789"
CHANNEL = "C0BENCH02"
REQUESTER = "U0B00000"
MIGRATIONS = {
    "20240101000000_init": "CREATE TABLE t (id int);\n",
    "20240102000000_slow": "SELECT pg_sleep(600);\nALTER TABLE t ADD COLUMN c int;\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.02)


class Cluster:
    """``count`` serve processes on one configuration, and a driver for each."""

    def __init__(self, tmp: Path, state: str, staging_url: str, slack: LocalSlack, slack_url: str,
                 count: int, lease: float, migrations: dict[str, str]) -> None:
        self.tmp, self.slack, self.slack_url, self.count = tmp, slack, slack_url, count
        folder = tmp / "migrations"
        for name, sql in migrations.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "migration.sql").write_text(sql)
        (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
        self.config = tmp / "migrabot.toml"
        self.config.write_text(f"""
[state]
{state}
leader_lease = "{lease:g}s"

[environments.staging]
database_url = "{staging_url}"
migrations_dir = "{folder}"
backup_dir = "{tmp / 'backups'}"
channel = "{CHANNEL}"
""")
        self.procs: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        self.drivers: list[SlackDriver] = []

    async def start(self) -> None:
        for i in range(self.count):  # one after the other: the first one leads
            port = free_port()
            env = {**os.environ, "SLACK_BOT_TOKEN": self.slack.bot_token, "SLACK_SIGNING_SECRET": SECRET,
                   "MIGRABOT_SLACK_API_URL": self.slack_url, "MIGRABOT_REPLICA": f"replica-{i}"}
            with (self.tmp / f"replica-{i}.log").open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
                    "--config", str(self.config), env=env, stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports.append(port)
            self.drivers.append(SlackDriver(f"http://127.0.0.1:{port}/slack/events", SECRET, self.slack,
                                            timeout=30))
            await wait_for(functools.partial(self.role, port))

    async def role(self, port: int) -> str | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                    http.get(f"http://127.0.0.1:{port}/healthz") as r:
                body = await r.json()
                return str(body.get("role")) if body.get("ok") else None
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for driver in self.drivers:
            await driver.close()


def message_at(slack: LocalSlack, ts: str) -> Message:
    """The channel's message ``ts``, which the bench saw posted."""
    msg = slack.message(CHANNEL, ts)
    if msg is None:
        raise SystemExit(f"message {ts} is no longer in {CHANNEL}")
    return msg


def run_message(slack: LocalSlack) -> Any:
    return next((m for m in slack.messages(CHANNEL) if " requested by " in m.text and m.blocks), None)


async def ack_latency(cluster: Cluster, n: int, rounds: int) -> list[float]:
    """``rounds`` bursts of ``n`` concurrent `/migrate staging`, spread round-robin; their response times."""
    users = [f"U0B{i:05d}" for i in range(n)]
    times: list[float] = []

    async def one(i: int) -> float:
        started = time.perf_counter()
        answer = await cluster.drivers[i % len(cluster.drivers)].slash(users[i], "/migrate", "staging", CHANNEL)
        if answer.status != 200:
            raise SystemExit(f"HTTP {answer.status} from replica {i % len(cluster.drivers)}")
        return time.perf_counter() - started

    for driver in cluster.drivers:  # warm-up: Bolt's auth.test, first imports, each thread's state connection
        for i in range(2):
            await driver.slash(users[i], "/migrate", "status staging", CHANNEL)
    await cluster.slack.wait_idle(quiet=0.5, timeout=30)
    for _ in range(rounds):
        before = len(cluster.slack.messages(CHANNEL))
        times += await asyncio.gather(*(one(i) for i in range(n)))
        def posted(known: int = before) -> Any:
            return len(cluster.slack.messages(CHANNEL)) > known and run_message(cluster.slack)

        await wait_for(posted)
        await cluster.slack.wait_idle(quiet=0.5, timeout=60)
        msg = max((m for m in cluster.slack.messages(CHANNEL) if " requested by " in m.text), key=lambda m: m.ts)
        requester = next(u for u in users if f"<@{u}>" in msg.text)
        await cluster.drivers[0].click(requester, CHANNEL, msg.ts, "abort")  # frees staging for the next round
        def aborted(ts: str = msg.ts) -> bool:
            return "abort" in (message_at(cluster.slack, ts).text or "").lower()

        await wait_for(aborted)
        await cluster.slack.wait_idle(quiet=0.5, timeout=60)
    return times


async def failover(cluster: Cluster) -> float:
    """Seconds from the SIGKILL of a run's owner to the explanation posted by another replica."""
    roles = [await cluster.role(p) for p in cluster.ports]
    owner = next(i for i, r in enumerate(roles) if r == "follower")
    driver = cluster.drivers[owner]
    await driver.slash(REQUESTER, "/migrate", "staging", CHANNEL)
    msg = await wait_for(lambda: (m := run_message(cluster.slack)) and "checkboxes" in str(m.blocks) and m)
    # the review box appears once the SQL is in the thread (and the bot's checks ran after it)
    asks = "read the SQL in the thread, then tick"
    await wait_for(lambda: asks in str(message_at(cluster.slack, msg.ts).blocks))
    msg = message_at(cluster.slack, msg.ts)
    values = [o["value"] for b in msg.blocks if b.get("type") == "actions" for e in b["elements"]
              if e.get("type") == "checkboxes" for o in e["options"]]
    await driver.check(REQUESTER, CHANNEL, msg.ts, "checklist", values)
    await wait_for(lambda: "'action_id': 'run'" in str(message_at(cluster.slack, msg.ts).blocks))
    await driver.click(REQUESTER, CHANNEL, msg.ts, "run")
    await wait_for(lambda: "Apply `20240102000000_slow`" in str(message_at(cluster.slack, msg.ts).blocks)
                   and "running" in message_at(cluster.slack, msg.ts).text, timeout=120)
    await asyncio.sleep(1.0)  # inside the slow migration
    cluster.procs[owner].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await wait_for(lambda: any("stopped answering" in r.text for r in message_at(cluster.slack, msg.ts).replies),
                   timeout=300)
    return time.monotonic() - killed


async def run(admin_url: str, n: int, rounds: int, lease: float) -> dict[str, Any]:
    stamp = int(time.time())
    dbs = [f"migrabot_bench_replicas_{stamp}_{x}"
           for x in ("sqlite", "pg", "state", "failover", "fstate", "state1", "pg1")]
    conn = await asyncpg.connect(admin_url)
    for db in dbs:
        await conn.execute(f"CREATE DATABASE {quote_ident(db)}")
    await conn.close()
    root = Path(tempfile.mkdtemp(prefix="migrabot-bench-replicas-"))
    results: dict[str, Any] = {}
    quick = {"20240101000000_init": MIGRATIONS["20240101000000_init"]}
    setups = [
        ("sqlite (1 replica)", f'path = "{root / "sqlite" / "state.sqlite3"}"', dbs[0], 1, quick),
        ("postgresql (3 replicas)", f'url = "{with_database(admin_url, dbs[2])}"', dbs[1], 3, quick),
        # the same state on one process: tells the backend's cost from three processes sharing the cores
        ("postgresql (1 replica)", f'url = "{with_database(admin_url, dbs[5])}"', dbs[6], 1, quick),
    ]
    try:
        for name, state, target_db, count, migrations in setups:
            tmp = root / re.sub(r"\W+", "_", name).strip("_")
            tmp.mkdir(parents=True, exist_ok=True)
            slack = LocalSlack(users={f"U0B{i:05d}": f"user{i}" for i in range(n)}, channels={CHANNEL: "bench"})
            slack_url = await slack.start()
            cluster = Cluster(tmp, state, with_database(admin_url, target_db), slack, slack_url, count, lease,
                              migrations)
            try:
                await cluster.start()
                results[name] = await ack_latency(cluster, n, rounds)
            finally:
                await cluster.stop()
                await slack.stop()
        tmp = root / "failover"
        tmp.mkdir()
        slack = LocalSlack(users={REQUESTER: "requester"}, channels={CHANNEL: "bench"})
        slack_url = await slack.start()
        cluster = Cluster(tmp, f'url = "{with_database(admin_url, dbs[4])}"', with_database(admin_url, dbs[3]),
                          slack, slack_url, 3, lease, MIGRATIONS)
        try:
            await cluster.start()
            results["failover"] = await failover(cluster)
        finally:
            await cluster.stop()
            await slack.stop()
    finally:
        conn = await asyncpg.connect(admin_url)
        for db in dbs:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
        await conn.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=50, help="concurrent commands per burst")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", type=float, default=15.0, help="leader_lease in seconds (the default is 15)")
    args = parser.parse_args()
    results = asyncio.run(run(args.admin_url, args.n, args.rounds, args.lease))
    machine = platform.processor() or platform.machine()
    print(f"ack latency, {args.n} concurrent /migrate x {args.rounds} rounds; {machine}, {os.cpu_count()} cores")
    print(f"{'':26} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'n':>5}")
    for name in ("sqlite (1 replica)", "postgresql (3 replicas)", "postgresql (1 replica)"):
        v = results[name]
        print(f"{name:26} {percentile(v, 50) * 1000:8.1f} {percentile(v, 99) * 1000:8.1f} "
              f"{statistics.fmean(v) * 1000:8.1f} {len(v):5d}")
    pg, lite = percentile(results["postgresql (3 replicas)"], 99), percentile(results["sqlite (1 replica)"], 99)
    ratio = pg / lite if lite else float("inf")
    verdict = "OK" if pg < 0.1 and ratio <= 1.5 else "MISSED"
    print(f"postgresql p99 {pg * 1000:.1f} ms = {ratio:.2f}x sqlite's (target < 100 ms and <= 1.5x): {verdict}")
    bound = args.lease + args.lease / 3
    print(f"failover: the run's explanation was posted {results['failover']:.1f} s after kill -9 of its owner "
          f"(lease {args.lease:g} s; bound lease + one heartbeat = {bound:.1f} s, plus the examination)")


if __name__ == "__main__":
    main()
