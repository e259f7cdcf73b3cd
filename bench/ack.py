"""Acknowledgement latency and memory: migrabot against a bare Bolt app that only acks.

    .venv/bin/python -m bench.ack [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--n 50]
                                  [--rounds 3] [--sustained 1000] [--sustained-rounds 2]

Five processes: each bot is served in its own (aiohttp on loopback, real request signing:
``bench.ack_server``, ``bench.ack_bare``), Slack's Web API stand-in in another (``bench.ack_slack``),
the load generator in a fourth (``bench.ack_loadgen``), and this one samples; so neither the
client's work nor the answers to the bots' API calls count against the servers, and each server's
RSS is its own. Both bots get the
same traffic, in two modes:

- **burst**: ``--n`` concurrent ``/migrate status staging`` commands (the real work happens after
  the ack), then ``--n`` concurrent ``approve`` clicks on a run message, waiting after each burst
  for the bot's follow-up work to finish; ``--rounds`` times;
- **sustained**: ``--sustained`` commands and as many clicks, interleaved, in bursts of ``--n`` with
  no wait between bursts (the follow-up work piles up); ``--sustained-rounds`` times per bot.

Reported: p50 and p99 of the HTTP response time per mode, migrabot's p99 as a ratio of the bare
app's from this run, and each server's RSS when idle (after a warm-up) and after each sustained round
(the plateau: the last), plus the peak; the CPU time each server and the stand-in used up to each
of those moments (``sent-…``: when a sustained round's last ack arrived), and how long migrabot's
follow-up work went on after the last ack. Targets: p99 < 100 ms and <= 1.5x the bare app in both
modes; migrabot's RSS plateau <= 80 MB. The database and the temporary folder it creates are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from actions.db import quote_ident, with_database
from bench.common import percentile

SECRET = "bench-signing-secret-0123456789abcdef"
TOKEN = "xoxb-bench-token"
MB = 1024 * 1024
P99_LIMIT, RATIO_LIMIT, RSS_LIMIT = 0.100, 1.5, 80 * MB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def start(module: str, spec: dict[str, Any], lines: int = 1) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Start ``python -m module``, send it ``spec``, read the ``lines`` it prints when ready."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, limit=1 << 26)
    assert proc.stdin and proc.stdout
    proc.stdin.write((json.dumps(spec) + "\n").encode())
    await proc.stdin.drain()
    out = []
    for _ in range(lines):
        line = (await proc.stdout.readline()).decode().strip()
        if not line:
            raise RuntimeError(f"{module} stopped before it was ready")
        out.append(line)
    return proc, out


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None and proc.stdin is not None:
        proc.stdin.close()  # each helper stops when its stdin closes
    try:
        await asyncio.wait_for(proc.wait(), timeout=20)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def run(admin_url: str, n: int, rounds: int, sustained: int, sustained_rounds: int) -> dict[str, Any]:
    db = f"migrabot_bench_ack_{os.getpid()}_{int(time.time())}"
    tmp = Path(tempfile.mkdtemp(prefix="migrabot-bench-ack-"))
    procs: list[asyncio.subprocess.Process] = []
    created = False
    try:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(db)}")
            created = True
        finally:
            await conn.close()
        folder = tmp / "migrations" / "20240101000000_init"
        folder.mkdir(parents=True)
        (folder / "migration.sql").write_text("CREATE TABLE t (id int);\n")
        config = f"""
[environments.staging]
database_url = "{with_database(admin_url, db)}"
migrations_dir = "{tmp / 'migrations'}"
backup_dir = "{tmp / 'backups'}"
approvers = ["U0NOBODY1"]
required_approvals = 1
"""
        slack, (api_url, control_url) = await start("bench.ack_slack", {"users": n, "token": TOKEN,
                                                                        "secret": SECRET}, lines=2)
        procs.append(slack)
        servers: dict[str, asyncio.subprocess.Process] = {}
        urls: dict[str, str] = {}
        for kind, module in (("migrabot", "bench.ack_server"), ("bare", "bench.ack_bare")):
            proc, (url,) = await start(module, {
                "token": TOKEN, "secret": SECRET, "api_url": api_url, "config": config,
                "base_dir": str(tmp), "state": str(tmp / "state.sqlite3")})
            procs.append(proc)
            servers[kind], urls[kind] = proc, url
        memory: dict[str, dict[str, int]] = {kind: {"peak": 0} for kind in servers}
        cpu: dict[str, dict[str, float]] = {}

        async def sample_peaks() -> None:
            while True:
                for kind, proc in servers.items():
                    memory[kind]["peak"] = max(memory[kind]["peak"], rss(proc.pid))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample_peaks())
        load, _ = await start("bench.ack_loadgen", {
            "secret": SECRET, "slack": control_url, "targets": urls, "n": n, "rounds": rounds,
            "sustained": sustained, "sustained_rounds": sustained_rounds}, lines=0)
        procs.append(load)
        assert load.stdin and load.stdout
        while True:
            line = await load.stdout.readline()
            if not line:
                raise RuntimeError("the load generator stopped without results")
            message = json.loads(line)
            if "mark" in message:
                for kind, proc in servers.items():
                    memory[kind][message["mark"]] = rss(proc.pid)
                for kind, proc in (*servers.items(), ("slack", slack)):
                    cpu.setdefault(kind, {})[message["mark"]] = cpu_seconds(proc.pid)
                load.stdin.write(b"ok\n")
                await load.stdin.drain()
                continue
            results: dict[str, list[float]] = message["results"]
            drain: dict[str, list[float]] = message["drain"]
            break
        sampler.cancel()
    finally:
        for proc in reversed(procs):
            await stop(proc)
        if created:
            conn = await asyncpg.connect(admin_url)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
            finally:
                await conn.close()
        shutil.rmtree(tmp, ignore_errors=True)
    summary: dict[str, Any] = {key: {"p50": percentile(v, 50), "p99": percentile(v, 99),
                                     "mean": statistics.fmean(v), "n": len(v)} for key, v in sorted(results.items())}
    for mode in ("burst", "sustained"):
        for name in ("migrabot", "bare"):
            every = [t for kind in ("command", "click") for t in results.get(f"{mode}.{name}.{kind}", [])]
            if every:
                summary[f"{mode}.{name}.all"] = {"p50": percentile(every, 50), "p99": percentile(every, 99),
                                                  "mean": statistics.fmean(every), "n": len(every)}
    return {"latency": summary, "memory": memory, "cpu": cpu, "drain": drain}


def report(out: dict[str, Any], args: argparse.Namespace) -> bool:
    summary, memory = out["latency"], out["memory"]
    machine = platform.processor() or platform.machine()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"ack latency: bursts of {args.n}; burst mode {args.rounds} round(s) with an idle wait after each burst; "
          f"sustained {args.sustained} commands + {args.sustained} clicks x {args.sustained_rounds} round(s), "
          f"no wait; {machine}, {os.cpu_count()} cores, load average {load}")
    print(f"{'':28} {'p50 ms':>8} {'p99 ms':>8} {'n':>6}")
    for key, s in summary.items():
        print(f"{key:28} {s['p50'] * 1000:8.1f} {s['p99'] * 1000:8.1f} {s['n']:6d}")
    ok = True
    for mode in ("burst", "sustained"):
        for kind in ("command", "click", "all"):
            m, b = summary.get(f"{mode}.migrabot.{kind}"), summary.get(f"{mode}.bare.{kind}")
            if m is None or b is None:
                continue
            ratio = m["p99"] / b["p99"] if b["p99"] else float("inf")
            good = m["p99"] < P99_LIMIT and ratio <= RATIO_LIMIT
            ok &= good
            print(f"{mode} {kind}: migrabot p99 {m['p99'] * 1000:.1f} ms = {ratio:.2f}x the bare app's "
                  f"{b['p99'] * 1000:.1f} ms (target < 100 ms and <= 1.5x): {'OK' if good else 'MISSED'}")
    marks = [k for k in memory["migrabot"] if k != "peak" and not k.startswith("sent-")]
    print("RSS MB        " + " ".join(f"{k:>14}" for k in [*marks, "peak"]))
    for kind in ("migrabot", "bare"):
        print(f"{kind:13} " + " ".join(f"{memory[kind].get(k, 0) / MB:14.1f}" for k in [*marks, "peak"]))
    every = list(out["cpu"]["migrabot"])
    print("CPU s (total)" + " ".join(f"{k:>21}" for k in every))
    for kind, used in out["cpu"].items():
        print(f"{kind:13}" + " ".join(f"{used.get(k, 0):21.2f}" for k in every))
    for kind, seconds in out["drain"].items():
        print(f"{kind}: follow-up work finished {', '.join(f'{x:.1f}' for x in seconds)} s after the last ack "
              "of each sustained round")
    plateau = memory["migrabot"][marks[-1]] if marks else 0
    good = 0 < plateau <= RSS_LIMIT
    ok &= good
    print(f"memory: migrabot plateau {plateau / MB:.1f} MB, bare app {memory['bare'][marks[-1]] / MB:.1f} MB "
          f"(target <= 80 MB): {'OK' if good else 'MISSED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=50, help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3, help="burst-mode rounds")
    parser.add_argument("--sustained", type=int, default=1000, help="commands (and as many clicks) per sustained round")
    parser.add_argument("--sustained-rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    out = asyncio.run(run(args.admin_url, args.n, args.rounds, args.sustained, args.sustained_rounds))
    report(out, args)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
