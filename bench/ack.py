"""Acknowledgement latency: how fast migrabot answers Slack, against a bare Bolt app that only acks.

    .venv/bin/python -m bench.ack [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--n 50] [--rounds 3]

Both apps are served the same way (aiohttp on loopback, real request signing) and receive
the same traffic: ``--n`` concurrent slash commands (``/migrate status ENV``, whose real work
happens after the ack), then ``--n`` concurrent button clicks on a run message. The payloads
are built by :class:`bot.simulator.slack_requests.SlackDriver` and fired, freshly signed, from a separate
load-generator process, so the client's own work does not count against the servers.
Reported: p50 and p99 of the HTTP response time, and migrabot's p99 as a ratio of the bare
app's. Targets: p99 < 100 ms, ≤ 1.5×.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from actions.db import quote_ident, with_database
from bot.app import build_app, http_application
from bot.config import check_config_text
from state.store import open_store

SECRET = "bench-signing-secret-0123456789abcdef"
CHANNEL = "C0BENCH01"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


async def serve(web_app: web.Application) -> tuple[str, web.AppRunner]:
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", runner


def bare_app(app: AsyncApp) -> AsyncApp:
    """The baseline: the same Bolt app with listeners that only ack."""

    @app.command("/migrate")
    async def command(ack: Any) -> None:
        await ack()

    @app.action("approve")
    async def approve(ack: Any) -> None:
        await ack()

    return app


async def loadgen(n: int, rounds: int, token: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.ack_loadgen",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout
    proc.stdin.write((json.dumps({"n": n, "rounds": rounds, "secret": SECRET, "token": token}) + "\n").encode())
    await proc.stdin.drain()
    base_url = (await proc.stdout.readline()).decode().strip()
    return proc, base_url


async def run(admin_url: str, n: int, rounds: int) -> dict[str, Any]:
    db = f"migrabot_bench_ack_{int(time.time())}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f"CREATE DATABASE {quote_ident(db)}")
    await conn.close()
    tmp = Path(tempfile.mkdtemp(prefix="migrabot-bench-ack-"))
    folder = tmp / "migrations" / "20240101000000_init"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text("CREATE TABLE t (id int);\n")
    config, problems, _ = check_config_text(f"""
[environments.staging]
database_url = "{with_database(admin_url, db)}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
approvers = ["U0NOBODY1"]
required_approvals = 1
""", environ={}, base_dir=tmp)
    assert config is not None, problems
    token = "xoxb-bench-token"
    proc, api_url = await loadgen(n, rounds, token)
    store = open_store(tmp / "state.sqlite3")
    app, wf = build_app(config, store, token=token, signing_secret=SECRET, api_url=api_url)
    migrabot_url, migrabot_runner = await serve(http_application(app, wf))
    bare = AsyncApp(client=AsyncWebClient(token=token, base_url=api_url), signing_secret=SECRET)
    bare_url, bare_runner = await serve(bare_app(bare).web_app(path="/slack/events"))
    try:
        assert proc.stdin and proc.stdout
        proc.stdin.write((json.dumps({"bare": bare_url, "migrabot": migrabot_url}) + "\n").encode())
        await proc.stdin.drain()
        results = json.loads(await proc.stdout.readline())
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
        await wf.close()
        await migrabot_runner.cleanup()
        await bare_runner.cleanup()
        store.close()
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
        await conn.close()
    return {key: {"p50": percentile(values, 50), "p99": percentile(values, 99),
                  "mean": statistics.fmean(values), "n": len(values)} for key, values in sorted(results.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=50, help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    summary = asyncio.run(run(args.admin_url, args.n, args.rounds))
    machine = platform.processor() or platform.machine()
    print(f"ack latency, {args.n} concurrent requests x {args.rounds} rounds; {machine}, {os.cpu_count()} cores")
    print(f"{'':22} {'p50 ms':>8} {'p99 ms':>8} {'n':>5}")
    for key, s in summary.items():
        print(f"{key:22} {s['p50'] * 1000:8.1f} {s['p99'] * 1000:8.1f} {s['n']:5d}")
    for kind in ("command", "click"):
        m, b = summary[f"migrabot.{kind}"], summary[f"bare.{kind}"]
        ratio = m["p99"] / b["p99"] if b["p99"] else float("inf")
        verdict = "OK" if m["p99"] < 0.1 and ratio <= 1.5 else "MISSED"
        print(f"{kind}: migrabot p99 {m['p99'] * 1000:.1f} ms = {ratio:.2f}x the bare app "
              f"(target < 100 ms and <= 1.5x): {verdict}")


if __name__ == "__main__":
    main()
