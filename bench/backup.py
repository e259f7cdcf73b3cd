"""Backup/restore benchmark: overhead over raw pg_dump, and how long a restore makes the database unavailable.

    .venv/bin/python -m bench.backup [--scale 70] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

1. Backup time: ``take_backup`` (pre-flight, custom format, checksums, ``pg_restore --list``) vs one
   raw ``pg_dump -Fc -f`` of the same database with the same pg_dump (best of --runs, alternating);
   and the parallel directory format (jobs=2) vs ``-Fc``.
2. Unavailability: two clients query during a restore, every 50 ms each (reconnecting when their
   session is ended): one reads a row of the LARGEST table (``pgbench_accounts``, by primary key),
   one a row of a small one (``pgbench_branches``, restored first). A probe is bad when it fails,
   takes over 200 ms, or finds no row (a table restored but not yet loaded answers, wrongly, with
   nothing). The longest bad window of each client is reported for restore-then-swap and for
   in-place (the runbook's way), next to the whole restore time.

Everything it creates (the temporary folder, the database and every copy a restore makes of it) is
removed on every path, unless ``--keep`` (which keeps only the generated database).

``--scale 70`` is about 1 GB (pgbench -i -s 70). Figures go to bench/results/backup.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from actions import pgtools
from actions.backup import take_backup
from actions.db import quote_ident, with_database
from actions.restore import drop_previous, restore
from bench.common import admin_exec, cpu_model, fetchval, run_tool

RESULTS = Path(__file__).resolve().parent / "results" / "backup.md"
DB = "mbbench_backup"
ENV = "bench"


@dataclass
class Probe:
    start: float
    end: float
    ok: bool


# (label, table, its key column, rows per pgbench scale unit)
PROBED = (("largest table", "pgbench_accounts", "aid", 100_000), ("small table", "pgbench_branches", "bid", 1))


async def _probe_loop(url: str, table: str, key: str, rows: int, stop: asyncio.Event, probes: list[Probe]) -> None:
    """An application: one row of ``table`` every 50 ms, reconnecting whenever its session is gone.
    A probe is good only if the row is there (an empty, still loading table is no answer)."""
    conn: asyncpg.Connection | None = None
    sql = f"SELECT 1 FROM {table} WHERE {key} = $1"
    n = 0
    while not stop.is_set():
        t0 = time.monotonic()
        ok = False
        n += 1
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(url, timeout=5)
            ok = await conn.fetchval(sql, n * 7919 % rows + 1, timeout=5) == 1
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


async def _drop_bench_databases(admin: str, *, keep_main: bool = False) -> list[str]:
    """Drop the benchmark's database and every copy a restore made of it (``<db>__restore_*``,
    ``<db>__before_restore_*``), even ones an interrupted restore left refusing connections. Retried
    for a minute when the server refuses the connection (other benchmarks may hold every slot)."""
    for attempt in range(30):
        try:
            conn = await asyncpg.connect(admin, timeout=10)
            break
        except (OSError, asyncpg.PostgresError):
            if attempt == 29:
                raise
            await asyncio.sleep(2)
    try:
        names = [r[0] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE left(datname, $1) = $2", len(DB), DB)]
        names = [n for n in names if not (keep_main and n == DB)]
        for name in names:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)", timeout=120)
        return names
    finally:
        await conn.close()


@dataclass
class Window:
    mode: str
    total: float  # the whole restore call (s)
    blocked: float  # migrabot's own timing of the unavailable span (s)
    longest: dict[str, float]  # per probed table: longest bad window seen by the client (s)
    bad: dict[str, int]
    count: dict[str, int]


async def _restore_window(url: str, backups: Path, backup_id: str, mode: str, scale: int) -> Window:
    stop = asyncio.Event()
    probes: dict[str, list[Probe]] = {label: [] for label, *_ in PROBED}
    tasks = [asyncio.create_task(_probe_loop(url, table, key, rows * scale, stop, probes[label]))
             for label, table, key, rows in PROBED]
    try:
        await asyncio.sleep(0.5)
        before = {label: list(p) for label, p in probes.items()}
        t = time.monotonic()
        result = await restore(url, backups, ENV, backup_id, confirm="RESTORE", mode=mode,
                               snapshot=mode == "in-place", requested_by="bench")
        total = time.monotonic() - t
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for label, p in before.items():  # the probe itself must work, or its windows mean nothing
        if not p or not all(x.ok for x in p):
            raise RuntimeError(f"the {label} probe failed before the restore started: the benchmark is broken")
    return Window(mode, total, result.unavailable_seconds,
                  {label: longest_outage(p) for label, p in probes.items()},
                  {label: sum(not x.ok or x.end - x.start > 0.2 for x in p) for label, p in probes.items()},
                  {label: len(p) for label, p in probes.items()})


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 ≈ 1 GB)")
    parser.add_argument("--runs", type=int, default=5, help="backup rounds (raw, migrabot, jobs=2 each, alternating)")
    parser.add_argument("--restore-runs", type=int, default=1, help="restores of each mode (alternating order)")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where the figures go (default {RESULTS})")
    args = parser.parse_args(argv)
    task = asyncio.current_task()
    if task is not None:  # SIGTERM cancels the run like Ctrl-C does, so the clean-up below still runs
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    admin, url = args.admin_url, with_database(args.admin_url, DB)
    server_version = str(await fetchval(admin, "SHOW server_version"))
    major = int(str(await fetchval(admin, "SHOW server_version_num"))) // 10000
    pgbench = pgtools.find_pg_tool("pgbench", major)
    dump = pgtools.find_pg_tool("pg_dump", major)
    conninfo, env = pgtools.libpq_args(url)
    load_start = _load()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="migrabot-bench-backup-"))
    windows: list[Window] = []
    try:
        await _drop_bench_databases(admin)
        await admin_exec(admin, f"CREATE DATABASE {quote_ident(DB)}")
        t0 = time.monotonic()
        print(f"generating: pgbench -i -s {args.scale} …", flush=True)
        await run_tool(pgbench.path, "-i", "-q", "-s", str(args.scale), "-d", conninfo, env=env)
        size = int(str(await fetchval(url, "SELECT pg_database_size(current_database())")))
        print(f"  {size / 2**20:.0f} MB in {time.monotonic() - t0:.0f}s", flush=True)

        # 1. backup time: each round times all three, in alternating order
        raw_times, mb_times, par_times, overheads = [], [], [], []
        raw_size = 0
        info = None
        for run in range(args.runs):
            for which in (("raw", "migrabot", "parallel") if run % 2 == 0 else ("parallel", "migrabot", "raw")):
                t = time.monotonic()
                if which == "raw":
                    await run_tool(dump.path, "-Fc", "-f", work / f"raw{run}.pgdump", "-d", conninfo, env=env)
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

        # 2. unavailability during restore, both modes, each client on the largest and a small table
        for run in range(args.restore_runs):
            for mode in (("swap", "in-place") if run % 2 == 0 else ("in-place", "swap")):
                w = await _restore_window(url, work / "backups", info.id, mode, args.scale)
                windows.append(w)
                print(f"  restore {mode}: {w.total:.1f}s, unavailable (migrabot) {w.blocked:.2f}s, client windows: "
                      + ", ".join(f"{label} {w.longest[label]:.2f}s ({w.bad[label]} bad of {w.count[label]})"
                                  for label, *_ in PROBED), flush=True)
                await drop_previous(url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        left = await _drop_bench_databases(admin, keep_main=args.keep)
        print(f"removed {work} and database(s): {', '.join(left) or 'none'}", flush=True)
    load_end = _load()

    raw, mb, par_t = min(raw_times), min(mb_times), min(par_times)
    mb_ratios = [m / r for m, r in zip(mb_times, raw_times, strict=True)]
    par_ratios = [p / r for p, r in zip(par_times, raw_times, strict=True)]
    par_vs_mb = [p / m for p, m in zip(par_times, mb_times, strict=True)]
    faster = sum(r < 1 for r in par_vs_mb)
    cpu = cpu_model()
    big, small = (label for label, *_ in PROBED)

    def rows(mode: str) -> list[Window]:
        return [w for w in windows if w.mode == mode]

    def span(xs: list[float], fmt: str = "{:.2f}") -> str:
        return fmt.format(xs[0]) if len(xs) == 1 else f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"

    swap, inpl = rows("swap"), rows("in-place")
    lines = [
        "# Backup and restore benchmark (`python -m bench.backup`)",
        "",
        f"- Run: {started}; machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; PostgreSQL {server_version}; "
        f"pg_dump {dump.major} ({dump.path})",
        f"- Load average (1/5/15 min) at start {load_start}, at end {load_end} (other work shares this machine)",
        f"- Database: `pgbench -i -s {args.scale}`, {size / 2**20:.0f} MB on disk; custom-format dump "
        f"{raw_size / 2**20:.0f} MB; {args.runs} backup rounds, {args.restore_runs} restore(s) per mode",
        "",
        "## 1. Backup time (baseline: raw `pg_dump -Fc -f` in the same round)",
        "",
        "| what | best (s) | ratio of bests | per-round ratios vs raw (median) | target |",
        "|---|---:|---:|---|---|",
        f"| raw `pg_dump -Fc` | {raw:.1f} | 1.00× | | |",
        f"| migrabot `take_backup` (pre-flight, -Fc, sha256, pg_restore --list, manifest) | {mb:.1f} | "
        f"{mb / raw:.2f}× | {span(mb_ratios)}× ({_median(mb_ratios):.2f}×) | ≤ 1.05× "
        f"{'(met)' if _median(mb_ratios) <= 1.05 else '(NOT met)'} |",
        f"| migrabot `take_backup(jobs=2)` (directory format, 2 workers) | {par_t:.1f} | {par_t / raw:.2f}× | "
        f"{span(par_ratios)}× ({_median(par_ratios):.2f}×) | report |",
        "",
        f"`jobs=2` vs one job (`take_backup`), same round: {', '.join(f'{r:.2f}×' for r in par_vs_mb)}; "
        f"faster in {faster} of {len(par_vs_mb)} rounds (median {_median(par_vs_mb):.2f}×).",
        f"migrabot's own work around pg_dump (pre-flight, sha256, `pg_restore --list`, manifest): "
        f"{min(overheads):.2f}–{max(overheads):.2f}s "
        f"({min(overheads) / raw:.1%}–{max(overheads) / raw:.1%} of the raw dump).",
        "All rounds (s): raw " + ", ".join(f"{t:.1f}" for t in raw_times) + "; migrabot "
        + ", ".join(f"{t:.1f}" for t in mb_times) + "; jobs=2 " + ", ".join(f"{t:.1f}" for t in par_times) + ".",
        "",
        "## 2. Unavailability during a restore (two clients, one query every 50 ms each, reconnecting)",
        "",
        f"A probe is bad when it fails, takes over 200 ms, or finds no row. Clients: `{PROBED[0][1]}` "
        f"(the {big}, {PROBED[0][3] * args.scale:,} rows, by primary key) and `{PROBED[1][1]}` (a {small}, "
        f"{PROBED[1][3] * args.scale} rows).",
        "",
        f"| mode | whole restore (s) | unavailable, migrabot's timing (s) | client window, {big} (s) "
        f"| client window, {small} (s) | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, ws, target in (("restore-then-swap (no snapshot)", swap, "≤ 2 s"),
                             ("in-place (runbook's way, snapshot first)", inpl, "baseline")):
        worst = max(w.longest[big] for w in ws) if ws else 0.0
        met = "" if target == "baseline" else (" (met)" if worst <= 2 else " (NOT met)")
        lines.append(f"| {name} | {span([w.total for w in ws], '{:.1f}')} | {span([w.blocked for w in ws], '{:.3f}')} "
                     f"| {span([w.longest[big] for w in ws])} | {span([w.longest[small] for w in ws])} "
                     f"| {target}{met} |")
    if swap and inpl:
        lines += ["", f"Swap vs in-place, the {big}'s client window (worst swap / best in-place): "
                  f"{max(w.longest[big] for w in swap):.2f}s / {min(w.longest[big] for w in inpl):.2f}s."]
        if max(w.longest[small] for w in inpl) < 0.5 * min(w.longest[big] for w in inpl):
            lines[-1] += (f" In place, the {small}'s client sees a much shorter window than the {big}'s: its table "
                          "is back early while the big one is still loading, so a probe on it alone understates "
                          "the outage.")
    lines.append("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
