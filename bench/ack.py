"""Acknowledgement latency: how fast migrabot answers Slack, against a bare Bolt app that only acks.

    .venv/bin/python -m bench.ack [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--n 50] [--rounds 3]

Both apps are served the same way (aiohttp on loopback, real request signing) and receive
the same traffic from :class:`bot.slack_requests.SlackDriver`: ``--n`` concurrent slash
commands (``/migrate status ENV``, whose real work happens after the ack), then ``--n``
concurrent button clicks on a run message. Reported: p50 and p99 of the HTTP response
time, and migrabot's p99 as a ratio of the bare app's. Targets: p99 < 100 ms, ≤ 1.5×.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
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
from bot.local_slack import LocalSlack
from bot.slack_requests import SlackDriver
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


def bare_app(slack: LocalSlack) -> AsyncApp:
    app = AsyncApp(client=AsyncWebClient(token=slack.bot_token, base_url=slack.base_url), signing_secret=SECRET)

    @app.command("/migrate")
    async def command(ack: Any) -> None:
        await ack()

    @app.action("approve")
    async def approve(ack: Any) -> None:
        await ack()

    return app


async def timed(coro: Any) -> float:
    started = time.perf_counter()
    answer = await coro
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {answer.body}")
    return time.perf_counter() - started


async def burst(driver: SlackDriver, users: list[str], message_ts: str | None) -> tuple[list[float], list[float]]:
    commands = await asyncio.gather(*(timed(driver.slash(u, "/migrate", "status staging", CHANNEL)) for u in users))
    clicks: list[float] = []
    if message_ts:
        clicks = await asyncio.gather(*(timed(driver.click(u, CHANNEL, message_ts, "approve")) for u in users))
    return list(commands), list(clicks)


async def run(admin_url: str, n: int, rounds: int) -> dict[str, Any]:
    db = f"migrabot_bench_ack_{int(time.time())}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f"CREATE DATABASE {quote_ident(db)}")
    await conn.close()
    users = {f"U0B{i:05d}": f"user{i}" for i in range(n)}
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
    slack = LocalSlack(users=users, channels={CHANNEL: "bench"})
    await slack.start()
    store = open_store(tmp / "state.sqlite3")
    app, wf = build_app(config, store, token=slack.bot_token, signing_secret=SECRET, api_url=slack.base_url)
    migrabot_url, migrabot_runner = await serve(http_application(app, wf))
    bare_url, bare_runner = await serve(bare_app(slack).web_app(path="/slack/events"))
    results: dict[str, dict[str, list[float]]] = {"migrabot": {"command": [], "click": []},
                                                  "bare": {"command": [], "click": []}}
    try:
        async with SlackDriver(migrabot_url, SECRET, slack) as m_driver, SlackDriver(bare_url, SECRET, slack) as b_driver:
            await m_driver.slash("U0B00000", "/migrate", "staging", CHANNEL)  # a run message to click on
            await wf.settle()
            await slack.wait_idle()
            (run_msg,) = [m for m in slack.messages(CHANNEL) if m.blocks and m.blocks[0]["type"] == "header"]
            for name, driver in (("bare", b_driver), ("migrabot", m_driver)):  # warm-up (auth.test, imports)
                await burst(driver, list(users)[:2], run_msg.ts)
            await wf.settle()
            for _ in range(rounds):
                for name, driver in (("bare", b_driver), ("migrabot", m_driver)):
                    commands, clicks = await burst(driver, list(users), run_msg.ts)
                    results[name]["command"] += commands
                    results[name]["click"] += clicks
                    await wf.settle()
                    await slack.wait_idle(quiet=0.1)
    finally:
        await wf.close()
        await migrabot_runner.cleanup()
        await bare_runner.cleanup()
        await slack.stop()
        store.close()
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
        await conn.close()
    summary: dict[str, Any] = {}
    for name, kinds in results.items():
        for kind, values in kinds.items():
            summary[f"{name}.{kind}"] = {"p50": percentile(values, 50), "p99": percentile(values, 99),
                                         "mean": statistics.fmean(values), "n": len(values)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=50, help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    summary = asyncio.run(run(args.admin_url, args.n, args.rounds))
    print(f"ack latency, {args.n} concurrent requests x {args.rounds} rounds; {platform.processor() or platform.machine()}")
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
