"""Backup/restore benchmark: overhead over raw pg_dump, and how long a restore makes the database unavailable.

    .venv/bin/python -m bench.backup [--scale 70] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

1. Backup time: ``take_backup`` (pre-flight, custom format, checksums, ``pg_restore --list``) vs one
   raw ``pg_dump -Fc -f`` of the same database with the same pg_dump (best of --runs, alternating);
   and the parallel directory format (jobs=2) vs ``-Fc``.
2. Unavailability: a client queries ``pgbench_branches`` every 50 ms (reconnecting when its session
   is ended) during a restore; the longest window of failed or slow (>200 ms) queries is reported
   for restore-then-swap and for in-place, next to the whole restore time.

``--scale 70`` is about 1 GB (pgbench -i -s 70). Figures go to bench/results/backup.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from actions import pgtools
from actions.backup import take_backup
from actions.db import quote_ident, with_database
from actions.restore import drop_previous, restore

RESULTS = Path(__file__).resolve().parent / "results" / "backup.md"
DB = "mbbench_backup"
ENV = "bench"


async def _admin_exec(admin: str, *sql: str) -> None:
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(*(str(a) for a in args), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {err.decode()[-500:]}")


@dataclass
class Probe:
    start: float
    end: float
    ok: bool


async def _probe_loop(url: str, stop: asyncio.Event, probes: list[Probe]) -> None:
    """An application: one query every 50 ms, reconnecting whenever its session is gone."""
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        t0 = time.monotonic()
        ok = False
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(url, timeout=5)
            await conn.fetchval("SELECT sum(bbalance) FROM pgbench_branches", timeout=5)
            ok = True
        except Exception:
            if conn is not None:
                conn.terminate()
            conn = None
        probes.append(Probe(t0, time.monotonic(), ok))
        await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
    if conn is not None:
        await conn.close()


def longest_outage(probes: list[Probe], slow: float = 0.2) -> float:
    """Longest span from the first failed/slow probe to the start of the next good one."""
    longest, window_start = 0.0, None
    for p in probes:
        bad = not p.ok or (p.end - p.start) > slow
        if bad:
            window_start = p.start if window_start is None else window_start
        elif window_start is not None:
            longest = max(longest, p.start - window_start)
            window_start = None
    if window_start is not None and probes:
        longest = max(longest, probes[-1].end - window_start)
    return longest


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 ≈ 1 GB)")
    parser.add_argument("--runs", type=int, default=3, help="backup timings: best of this many")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    args = parser.parse_args(argv)
    admin, url = args.admin_url, with_database(args.admin_url, DB)
    server_version = str(await _fetchval(admin, "SHOW server_version"))
    major = int(str(await _fetchval(admin, "SHOW server_version_num"))) // 10000
    pgbench = pgtools.find_pg_tool("pgbench", major)
    dump = pgtools.find_pg_tool("pg_dump", major)
    conninfo, env = pgtools.libpq_args(url)
    work = Path(tempfile.mkdtemp(prefix="migrabot-bench-backup-"))
    try:
        await _admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(DB)} WITH (FORCE)",
                          f"CREATE DATABASE {quote_ident(DB)}")
        t0 = time.monotonic()
        print(f"generating: pgbench -i -s {args.scale} …", flush=True)
        await _run(pgbench.path, "-i", "-q", "-s", str(args.scale), "-d", conninfo, env=env)
        size = int(str(await _fetchval(url, "SELECT pg_database_size(current_database())")))
        print(f"  {size / 2**20:.0f} MB in {time.monotonic() - t0:.0f}s", flush=True)

        # 1. backup time
        raw_times, mb_times, par_times, overheads = [], [], [], []
        info = None
        for run in range(args.runs):
            for which in (("raw", "migrabot", "parallel") if run % 2 == 0 else ("parallel", "migrabot", "raw")):
                t = time.monotonic()
                if which == "raw":
                    await _run(dump.path, "-Fc", "-f", work / f"raw{run}.pgdump", "-d", conninfo, env=env)
                    raw_times.append(time.monotonic() - t)
                    raw_size = (work / f"raw{run}.pgdump").stat().st_size
                    (work / f"raw{run}.pgdump").unlink()
                elif which == "migrabot":
                    info = await take_backup(url, work / "backups", ENV, reason="bench", requested_by="bench")
                    mb_times.append(time.monotonic() - t)
                    overheads.append(mb_times[-1] - info.manifest["dump_seconds"])
                else:
                    par = await take_backup(url, work / "backups", ENV, reason="bench", requested_by="bench", jobs=2)
                    par_times.append(time.monotonic() - t)
                    shutil.rmtree(par.path)
                print(f"  {which}: {time.monotonic() - t:.1f}s", flush=True)
        assert info is not None
        raw, mb, par_t = min(raw_times), min(mb_times), min(par_times)

        # 2. unavailability during restore
        outages: dict[str, tuple[float, float, float]] = {}
        for mode in ("swap", "in-place"):
            stop, probes = asyncio.Event(), []
            prober = asyncio.create_task(_probe_loop(url, stop, probes))
            await asyncio.sleep(0.5)
            t = time.monotonic()
            result = await restore(url, work / "backups", ENV, info.id, confirm="RESTORE", mode=mode,
                                   snapshot=mode == "in-place", requested_by="bench")
            total = time.monotonic() - t
            await asyncio.sleep(0.5)
            stop.set()
            await prober
            outages[mode] = (longest_outage(probes), total, result.unavailable_seconds)
            print(f"  restore {mode}: {total:.1f}s, longest outage {outages[mode][0]:.2f}s "
                  f"({sum(not p.ok for p in probes)} failed of {len(probes)} probes)", flush=True)
            await drop_previous(url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            await _admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(DB)} WITH (FORCE)")

    cpu = _cpu_model()
    swap_out, swap_total, swap_blocked = outages["swap"]
    inpl_out, inpl_total, inpl_blocked = outages["in-place"]
    lines = [
        "# Backup and restore benchmark (`.venv/bin/python -m bench.backup`)",
        "",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; PostgreSQL {server_version}; "
        f"pg_dump {dump.major} ({dump.path})",
        f"- Database: `pgbench -i -s {args.scale}`, {size / 2**20:.0f} MB on disk; custom-format dump "
        f"{raw_size / 2**20:.0f} MB; best of {args.runs} runs, alternating order",
        "",
        "## 1. Backup time (baseline: raw `pg_dump -Fc -f` in the same run)",
        "",
        "| what | seconds | ratio vs raw pg_dump -Fc | target |",
        "|---|---:|---:|---|",
        f"| raw `pg_dump -Fc` | {raw:.1f} | 1.00× | |",
        f"| migrabot `take_backup` (pre-flight, -Fc, sha256, pg_restore --list, manifest) | {mb:.1f} | "
        f"{mb / raw:.2f}× | ≤ 1.05× {'(met)' if mb / raw <= 1.05 else '(NOT met)'} |",
        f"| migrabot `take_backup(jobs=2)` (directory format, 2 workers) | {par_t:.1f} | {par_t / raw:.2f}× | report |",
        "",
        f"migrabot's own work around pg_dump (pre-flight, sha256, `pg_restore --list`, manifest): "
        f"{min(overheads):.2f}s at best, {max(overheads):.2f}s at worst ({min(overheads) / raw:.1%} of the raw dump). "
        "All runs (s): raw " + ", ".join(f"{t:.1f}" for t in raw_times) + "; migrabot "
        + ", ".join(f"{t:.1f}" for t in mb_times) + "; jobs=2 " + ", ".join(f"{t:.1f}" for t in par_times) + ".",
        f"Load average during the run (other work shares this machine): {os.getloadavg()[0]:.1f}.",
        "",
        "## 2. Unavailability during a restore (client queries every 50 ms, reconnecting)",
        "",
        "| mode | whole restore (s) | database unavailable, as migrabot timed it (s) "
        "| longest failed/slow window seen by the client (s) | target |",
        "|---|---:|---:|---:|---|",
        f"| restore-then-swap (no snapshot) | {swap_total:.1f} | {swap_blocked:.3f} | {swap_out:.2f} | ≤ 2 s "
        f"{'(met)' if swap_out <= 2 else '(NOT met)'} |",
        f"| in-place (runbook's way, snapshot first) | {inpl_total:.1f} | {inpl_blocked:.1f} | {inpl_out:.2f} | "
        "baseline: the restore time |",
        "",
        f"Swap outage vs in-place outage (migrabot's timing): {swap_blocked / max(inpl_blocked, 1e-9):.3f}×. "
        "The client's window is 0 when its session was ended and it reconnected to the restored database "
        "between two 50 ms probes.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
