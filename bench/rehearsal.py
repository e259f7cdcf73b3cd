"""Rehearsal benchmark: overhead over a plain restore + psql, and how exactly lock holds are reported.

    python -m bench.rehearsal [--size-mb 1024] [--runs 1] [--jobs 2] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

A database of about ``--size-mb`` (``pgbench -i``, scale = size / 15 MB) gets a ``_prisma_migrations``
table, a verified migrabot backup, and five pending migrations:

1. ``ADD COLUMN`` on pgbench_accounts (brief),
2. ``SET NOT NULL`` on pgbench_accounts.filler (scans the big table under ACCESS EXCLUSIVE),
3. ``CREATE INDEX CONCURRENTLY`` on pgbench_accounts (its own file, outside a transaction),
4. ``ALTER COLUMN TYPE bigint`` on pgbench_accounts.abalance (rewrites the big table),
5. ``LOCK TABLE pgbench_tellers IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2);`` (a known 2 s hold).

Overhead: ``rehearse()`` end to end (live status, backup verification, restore, verification,
ANALYZE, measured apply, drop) vs the baseline of the same run: ``pg_restore -j`` of the same
archive into a new database plus ``psql`` applying the same five files (``-1`` for the
transactional ones), each file timed. Each run starts after a CHECKPOINT. Best and median of
``--runs``, alternating order. Target ≤ 1.15×.

Lock-hold accuracy: the reported hold of the LOCK + pg_sleep(2) migration against 2 s, and of the
SET NOT NULL against ``BEGIN; ALTER …; COMMIT`` timed by the client on a ``CREATE DATABASE …
TEMPLATE`` copy of the generated database (the lock is taken at the start and released at the
COMMIT; pgbench's VACUUM left its pages in the state the rehearsal's ANALYZE leaves the restored
ones). Target: within ±100 ms or ±10 %.

Prod impact: while a rehearsal runs on the same server, an application query (a primary-key read
of pgbench_accounts, and an UPDATE of one pgbench_tellers row) every 50 ms against the live
database; its p50, p99 and worst latency against the same probe over the same length of time with
no rehearsal running, in the same run. Reported, no target (the issue asks for the figure).

Figures go to bench/results/rehearsal.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from actions import pgtools
from actions.backup import take_backup
from actions.db import quote_ident, with_database
from actions.rehearsal import RehearsalResult, rehearse
from bench.common import admin_exec, cpu_model, fetchval, percentile, run_tool

RESULTS = Path(__file__).resolve().parent / "results" / "rehearsal.md"
DB = "mbbench_rehearsal"
BASELINE_DB = "mbbench_rehearsal_plain"
REFERENCE_DB = "mbbench_rehearsal_ref"
ENV = "bench"
SLEEP = 2.0
MIGRATIONS = {
    "20240101000001_add_note": 'ALTER TABLE "pgbench_accounts" ADD COLUMN "note" TEXT;\n',
    "20240101000002_filler_required": 'ALTER TABLE "pgbench_accounts" ALTER COLUMN "filler" SET NOT NULL;\n',
    "20240101000003_bid_index": 'CREATE INDEX CONCURRENTLY "accounts_bid_idx" ON "pgbench_accounts"("bid");\n',
    "20240101000004_balance_bigint": 'ALTER TABLE "pgbench_accounts" ALTER COLUMN "abalance" SET DATA TYPE BIGINT;\n',
    "20240101000005_hold": f'LOCK TABLE "pgbench_tellers" IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep({SLEEP:g});\n',
}
PRISMA_TABLE = """
CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
    migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
VALUES ('1', '{checksum}', now(), '20240101000000_init', 1);
"""
INIT = "-- pgbench -i made the tables\nSELECT 1;\n"


def _write_migrations(folder: Path) -> None:
    for name, sql in {"20240101000000_init": INIT, **MIGRATIONS}.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "migration.sql").write_text(sql)


async def _baseline(admin: str, dump: Path, folder: Path, jobs: int, major: int) -> tuple[float, dict[str, float]]:
    """pg_restore -j into a new database, then psql per file; total seconds and each file's seconds."""
    restore = pgtools.find_pg_tool("pg_restore", major)
    psql = pgtools.find_pg_tool("psql", major)
    url = with_database(admin, BASELINE_DB)
    conninfo, env = pgtools.libpq_args(url)
    await admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(BASELINE_DB)} WITH (FORCE)")
    t0 = time.monotonic()
    await admin_exec(admin, f"CREATE DATABASE {quote_ident(BASELINE_DB)}")
    await run_tool(restore.path, "--no-owner", "-j", str(jobs), "-d", conninfo, dump, env=env)
    files: dict[str, float] = {}
    for name, sql in MIGRATIONS.items():
        single = [] if "CONCURRENTLY" in sql else ["-1"]
        t = time.monotonic()
        await run_tool(psql.path, "-X", "-q", "-v", "ON_ERROR_STOP=1", *single, "-d", conninfo,
                   "-f", folder / name / "migration.sql", env=env)
        files[name] = time.monotonic() - t
    total = time.monotonic() - t0
    await admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(BASELINE_DB)} WITH (FORCE)")
    return total, files


async def _reference_hold(admin: str, sql: str) -> float:
    """Client-timed BEGIN; sql; COMMIT on a template copy of the generated database."""
    await admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(REFERENCE_DB)} WITH (FORCE)",
                      f"CREATE DATABASE {quote_ident(REFERENCE_DB)} TEMPLATE {quote_ident(DB)}")
    try:
        conn = await asyncpg.connect(with_database(admin, REFERENCE_DB), timeout=10)
        try:
            t0 = time.monotonic()
            await conn.execute(f"BEGIN; {sql}; COMMIT")
            return time.monotonic() - t0
        finally:
            await conn.close()
    finally:
        await admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(REFERENCE_DB)} WITH (FORCE)")


PROBE_EVERY = 0.05


async def _probe(url: str, stop: asyncio.Event) -> list[float]:
    """The application's queries every 50 ms until ``stop``; each one's latency in seconds."""
    conn = await asyncpg.connect(url, timeout=10)
    latencies: list[float] = []
    try:
        n = 0
        while not stop.is_set():
            n += 1
            t = time.monotonic()
            await conn.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1 + n % 1000)
            await conn.execute("UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = $1", 1 + n % 10)
            latencies.append(time.monotonic() - t)
            await asyncio.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - t)))
    finally:
        await conn.close()
    return latencies


async def _impact(url: str, folder: Path, backups: Path, jobs: int) -> tuple[list[float], list[float], float]:
    """The probe's latencies alone, then while a rehearsal runs (as long as it takes); and that time."""
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, stop))
    t = time.monotonic()
    result = await rehearse(url, folder, backups, ENV, jobs=jobs)
    took = time.monotonic() - t
    stop.set()
    during = await probe
    assert result.ok, [m.verdict for m in result.migrations]
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, stop))
    await asyncio.sleep(took)
    stop.set()
    return await probe, during, took


def _ms(values: list[float], p: float) -> float:
    return 1000 * percentile(values, p)


def _within(reported: float, reference: float) -> bool:
    return abs(reported - reference) <= max(0.1, 0.1 * reference)


def _hold(result: RehearsalResult, migration: str, relation: str) -> float:
    m = next(m for m in result.migrations if m.name == migration)
    return max(lock.held_for for st in m.statements for lock in st.locks if lock.relation == relation)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated database (≈15 MB per "
                                                                  "pgbench scale unit); the issue's target is 1 GB")
    parser.add_argument("--runs", type=int, default=1, help="best of this many (alternating order)")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore -j, for both")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    args = parser.parse_args(argv)
    admin, url = args.admin_url, with_database(args.admin_url, DB)
    server_version = str(await fetchval(admin, "SHOW server_version"))
    major = int(str(await fetchval(admin, "SHOW server_version_num"))) // 10000
    pgbench = pgtools.find_pg_tool("pgbench", major)
    conninfo, env = pgtools.libpq_args(url)
    scale = max(1, round(args.size_mb / 15))
    work = Path(tempfile.mkdtemp(prefix="migrabot-bench-rehearsal-"))
    folder = work / "migrations"
    _write_migrations(folder)
    plain_runs: list[tuple[float, dict[str, float]]] = []
    results: list[tuple[float, RehearsalResult]] = []
    try:
        await admin_exec(admin, f"DROP DATABASE IF EXISTS {quote_ident(DB)} WITH (FORCE)",
                          f"CREATE DATABASE {quote_ident(DB)}")
        print(f"generating: pgbench -i -s {scale} …", flush=True)
        t0 = time.monotonic()
        await run_tool(pgbench.path, "-i", "-q", "-s", str(scale), "-d", conninfo, env=env)
        await admin_exec(url, PRISMA_TABLE.format(checksum=hashlib.sha256(INIT.encode()).hexdigest()))
        size = int(str(await fetchval(url, "SELECT pg_database_size(current_database())")))
        print(f"  {size / 2**20:.0f} MB in {time.monotonic() - t0:.0f}s", flush=True)
        not_null_ref = await _reference_hold(admin, MIGRATIONS["20240101000002_filler_required"].strip().rstrip(";"))
        info = await take_backup(url, work / "backups", ENV, reason="bench", requested_by="bench")
        print(f"  backup {info.id}: {info.size_bytes / 2**20:.0f} MB archive", flush=True)
        for run in range(args.runs):
            for which in (("plain", "rehearsal") if run % 2 == 0 else ("rehearsal", "plain")):
                # both start from a checkpoint: neither pays for flushing what the other left dirty
                # (PostgreSQL 15's DROP DATABASE, which the rehearsal ends with, forces a checkpoint)
                await admin_exec(admin, "CHECKPOINT")
                if which == "plain":
                    total, files = await _baseline(admin, info.dump_path, folder, args.jobs, major)
                    plain_runs.append((total, files))
                    print(f"  plain pg_restore -j{args.jobs} + psql: {total:.1f}s", flush=True)
                else:
                    t = time.monotonic()
                    result = await rehearse(url, folder, work / "backups", ENV, jobs=args.jobs)
                    results.append((time.monotonic() - t, result))
                    assert result.ok, [m.verdict for m in result.migrations]
                    print(f"  rehearsal: {results[-1][0]:.1f}s (restore {result.restore_seconds:.1f}s, analyze "
                          f"{result.analyze_seconds:.1f}s)", flush=True)
        await admin_exec(admin, "CHECKPOINT")
        alone, during, impact_seconds = await _impact(url, folder, work / "backups", args.jobs)
        print(f"  prod impact: p99 {_ms(alone, 99):.1f} ms alone, {_ms(during, 99):.1f} ms during a rehearsal",
              flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            await admin_exec(admin, *(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)"
                                       for db in (DB, BASELINE_DB, REFERENCE_DB)))

    plain, plain_files = min(plain_runs, key=lambda p: p[0])
    best, result = min(results, key=lambda r: r[0])
    ratio = best / plain
    median_ratio = statistics.median(r[0] for r in results) / statistics.median(p[0] for p in plain_runs)
    drops = [next(s.duration for s in r.steps if s.name == "drop the copy" and s.status == "done") for _, r in results]
    sleep_hold = _hold(result, "20240101000005_hold", "pgbench_tellers")
    not_null_hold = _hold(result, "20240101000002_filler_required", "pgbench_accounts")
    applied = sum(m.duration for m in result.migrations)
    lines = [
        "# Rehearsal benchmark (`python -m bench.rehearsal`)",
        "",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}; PostgreSQL {server_version}",
        f"- Database: `pgbench -i -s {scale}`, {size / 2**20:.0f} MB on disk; 5 pending migrations (ADD COLUMN, "
        "SET NOT NULL, CREATE INDEX CONCURRENTLY, ALTER COLUMN TYPE bigint, LOCK + pg_sleep(2)); "
        f"pg_restore -j{args.jobs} for both; best of {args.runs} run(s), alternating order",
        f"- Load average at the end (other work shares this machine): {os.getloadavg()[0]:.1f}",
        "",
        "## 1. Overhead (baseline: plain `pg_restore -j` into a new database + `psql` applying the same files)",
        "",
        "| what | seconds | ratio | target |",
        "|---|---:|---:|---|",
        f"| plain pg_restore + psql | {plain:.1f} | 1.00× | |",
        f"| `rehearse()` end to end | {best:.1f} | {ratio:.2f}× | ≤ 1.15× "
        f"{'(met)' if ratio <= 1.15 else '(NOT met)'} |",
        f"| median of the runs | | {median_ratio:.2f}× | |",
        "",
        f"Inside the rehearsal: restore + verification {result.restore_seconds:.1f}s, ANALYZE "
        f"{result.analyze_seconds:.1f}s, the five migrations {applied:.1f}s (psql: {sum(plain_files.values()):.1f}s; "
        "the plain copy's first scans also set the hint bits that the rehearsal's ANALYZE sets). "
        "All runs (s): plain " + ", ".join(f"{p[0]:.1f}" for p in plain_runs) + "; rehearsal "
        + ", ".join(f"{r[0]:.1f}" for r in results) + ". Dropping the copy (DROP DATABASE forces a checkpoint on "
        "PostgreSQL 15) took " + ", ".join(f"{d:.1f}" for d in drops) + " s.",
        "",
        "## 2. Lock-hold accuracy (target: within ±100 ms or ±10 %)",
        "",
        "| migration | reported hold (s) | reference (s) | difference | met |",
        "|---|---:|---:|---:|---|",
        f"| `LOCK TABLE … ACCESS EXCLUSIVE; SELECT pg_sleep({SLEEP:g})` | {sleep_hold:.3f} | {SLEEP:.3f} (the sleep) "
        f"| {1000 * (sleep_hold - SLEEP):+.0f} ms | {'yes' if _within(sleep_hold, SLEEP) else 'NO'} |",
        f"| `SET NOT NULL` on pgbench_accounts | {not_null_hold:.3f} | {not_null_ref:.3f} (BEGIN … COMMIT timed by "
        f"the client on a template copy) | {1000 * (not_null_hold - not_null_ref):+.0f} ms | "
        f"{'yes' if _within(not_null_hold, not_null_ref) else 'NO'} |",
        "",
        "Verdicts: " + "; ".join(f"{m.name}: {m.verdict}" for m in result.migrations) + ".",
        "",
        "## 3. Prod impact: the application's queries while a rehearsal runs on the same server",
        "",
        f"A primary-key read and a one-row UPDATE every {1000 * PROBE_EVERY:.0f} ms against the live database, "
        f"during a rehearsal ({impact_seconds:.1f} s) and for as long with none running, in the same run.",
        "",
        "| probe | queries | p50 (ms) | p99 (ms) | worst (ms) |",
        "|---|---:|---:|---:|---:|",
        f"| no rehearsal running | {len(alone)} | {_ms(alone, 50):.1f} | {_ms(alone, 99):.1f} "
        f"| {_ms(alone, 100):.1f} |",
        f"| rehearsal running | {len(during)} | {_ms(during, 50):.1f} | {_ms(during, 99):.1f} "
        f"| {_ms(during, 100):.1f} |",
        f"| ratio | | {_ms(during, 50) / _ms(alone, 50):.2f}× | {_ms(during, 99) / _ms(alone, 99):.2f}× | |",
        "",
        "A rehearsal shares the server's CPU and disk (pg_restore, ANALYZE, the rewrites) but takes no lock on the "
        "live database: where the p99 matters, `rehearsal_url` puts the copy on another server.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
