"""Engine benchmark: deploy throughput against `psql -f` and dbmate, and the application's stall behind a reader.

    .venv/bin/python -m bench.engine [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--hold 10]
                                     [--counts 200,500,1000,5000] [--runs 5] [--big-runs 3] [--no-stall]

1. Throughput: the umami corpus (19 migrations) and generated tiny migrations (``--counts``), applied
   on an empty database by migrabot's deploy, by dbmate (``dbmate up``, each migration in its own
   transaction, from its npm package installed under build/dbmate; skipped with the reason when npm
   is missing) and by one `psql -f` of the concatenated files (ON_ERROR_STOP): the floor. Median of
   --runs, the tools interleaved in a rotating order; each figure printed as a ratio to the floor of
   the same run, and each run's ratios. Every database and temporary folder it creates is removed,
   whatever happens (dbmate's npm package stays under build/dbmate, installed once).
2. Lock stall: a transaction holds ACCESS SHARE on a busy table for --hold seconds while a
   migration needs ACCESS EXCLUSIVE; a client queries the table every 50 ms. For migrabot and psql:
   the longest wait, the total of the waits over 50 ms (stalls), their number, the migration's wall
   time and how long after the reader's end it was done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from actions.deploy import deploy
from actions.migrations_dir import read_migrations
from bench.common import drop_db, fresh_db
from bot.config import RetryPolicy

UMAMI = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "umami" / "migrations"
BUILD = Path(__file__).resolve().parent.parent / "build"
DBMATE_VERSION = "2.36.0"
STALL = 0.05  # a query slower than this waited for a lock (it takes ~1 ms otherwise)


def dbmate_binary() -> tuple[str | None, str]:
    """dbmate from its npm package under build/dbmate (installed on first use); (None, why) when it cannot be."""
    folder = BUILD / "dbmate"
    binary = folder / "node_modules" / ".bin" / "dbmate"
    if binary.exists():
        return str(binary), ""
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed (dbmate ships as the npm package `dbmate`)"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"dbmate@{DBMATE_VERSION}"],
                          cwd=folder, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not binary.exists():
        return None, f"npm install dbmate failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return str(binary), ""


def _dbmate_folder(folder: Path, root: Path) -> Path:
    """The Prisma migrations as dbmate files: ``<version>_<name>.sql`` with ``-- migrate:up``."""
    out = root / "dbmate"
    out.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(read_migrations(folder)):
        (out / f"{i + 1:06d}_{m.name}.sql").write_text(f"-- migrate:up\n{m.sql}\n\n-- migrate:down\n")
    return out


async def _dbmate(binary: str, url: str, folder: Path) -> None:
    sep = "&" if "?" in url else "?"
    proc = await asyncio.create_subprocess_exec(
        binary, "--url", f"{url}{sep}sslmode=disable", "--migrations-dir", str(folder), "--no-dump-schema", "up",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dbmate failed: {err.decode()[:500]}")





async def _psql(url: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec("psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", *args,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed: {err.decode()[:500]}")


def _generated(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for i in range(count):
        folder = root / f"{i:05d}_gen"
        folder.mkdir(exist_ok=True)
        (folder / "migration.sql").write_text(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, v text NOT NULL DEFAULT '');\n"
            f"CREATE INDEX t{i}_v ON t{i} (v);\n")
    return root


def _concatenate(folder: Path, tmp: Path) -> Path:
    """One file with every migration, as a team running `psql -f` by hand would build it."""
    concat = tmp / "all.sql"
    concat.write_text("\n".join(m.sql + "\n;" for m in read_migrations(folder)))
    return concat


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def throughput(admin: str, label: str, folder: Path, runs: int = 3,
                     dbmate: str | None = None) -> dict[str, float]:
    """Median seconds per tool on a fresh database each time.

    The tools take turns within a run, in an order that rotates from run to run (on a shared
    machine the load drifts: no tool always goes first). Printed: the medians as ratios to the
    floor's median, and each run's ratios (to the floor of the same run).
    """
    tools = ["psql", "migrabot", *(["dbmate"] if dbmate else [])]
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        concat = _concatenate(folder, Path(tmp))
        dbmate_dir = _dbmate_folder(folder, Path(tmp)) if dbmate else None
        for run in range(runs):
            for tool in tools[run % len(tools):] + tools[:run % len(tools)]:
                name = f"bench_engine_{run}_{tool}"
                try:
                    url = await fresh_db(admin, name)
                    t0 = time.perf_counter()
                    if tool == "psql":
                        await _psql(url, "-f", str(concat))
                    elif tool == "dbmate":
                        await _dbmate(dbmate, url, dbmate_dir)  # type: ignore[arg-type]
                    else:
                        result = await deploy(url, folder)
                        assert result.ok, result.failed
                    times[tool].append(time.perf_counter() - t0)
                finally:
                    await drop_db(admin, name)
    medians = {tool: statistics.median(t) for tool, t in times.items()}
    floor = medians["psql"]
    figures = ", ".join(f"{tool} {t:.3f}s ({t / floor:.2f}x)" for tool, t in medians.items() if tool != "psql")
    print(f"{label}: psql -f (floor) {floor:.3f}s; {figures} (target: migrabot <= 1.2x and <= dbmate)", flush=True)
    per_run = "; ".join(
        f"run {i + 1}: " + ", ".join(f"{tool} {times[tool][i] / times['psql'][i]:.2f}x" for tool in tools[1:])
        for i in range(runs))
    print(f"  per run (ratio to that run's psql): {per_run}; {load_before} -> {_load()}", flush=True)
    return medians


@dataclass
class Stall:
    worst: float  # the longest application query
    total: float  # the application's queries slower than STALL, added up
    count: int  # how many there were
    wall: float  # the migration, from its start to its end
    after_reader: float  # from the reader's end to the migration's end


async def _stall(admin: str, hold: float, apply) -> Stall:  # type: ignore[no-untyped-def]
    try:
        return await _stall_on(await fresh_db(admin, "bench_engine_stall"), hold, apply)
    finally:
        await drop_db(admin, "bench_engine_stall")


async def _stall_on(url: str, hold: float, apply) -> Stall:  # type: ignore[no-untyped-def]
    setup = await asyncpg.connect(url)
    await setup.execute("CREATE TABLE busy (id int PRIMARY KEY); INSERT INTO busy SELECT generate_series(1, 1000)")
    await setup.close()
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")
    stop = asyncio.Event()
    stalls: list[float] = []
    released = 0.0

    async def probe() -> None:
        conn = await asyncpg.connect(url)
        while not stop.is_set():
            t0 = time.perf_counter()
            await conn.fetchval("SELECT count(*) FROM busy")
            stalls.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        await conn.close()

    async def release() -> None:
        nonlocal released
        await asyncio.sleep(hold)
        await holder.execute("COMMIT")
        released = time.perf_counter()

    probing = asyncio.create_task(probe())
    releasing = asyncio.create_task(release())
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    await apply(url)
    done = time.perf_counter()
    await releasing
    await asyncio.sleep(0.3)
    stop.set()
    await probing
    await holder.close()
    slow = [s for s in stalls if s > STALL]
    return Stall(max(stalls), sum(slow, 0.0), len(slow), done - t0, done - released)


async def lock_stall(admin: str, hold: float, lock_timeout: float) -> tuple[Stall, Stall]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        (folder / "01_alter").mkdir(parents=True)
        sql = "ALTER TABLE busy ADD COLUMN note text;\n"
        (folder / "01_alter" / "migration.sql").write_text(sql)
        (Path(tmp) / "alter.sql").write_text(sql)

        async def with_migrabot(url: str) -> None:
            result = await deploy(url, folder, lock_timeout=lock_timeout,
                                  retry=RetryPolicy(max_attempts=100, max_total=hold * 3))
            assert result.ok, result.failed

        async def with_psql(url: str) -> None:
            await _psql(url, "-f", str(Path(tmp) / "alter.sql"))

        ours = await _stall(admin, hold, with_migrabot)
        theirs = await _stall(admin, hold, with_psql)
    print(f"lock stall (reader holds ACCESS SHARE {hold:g}s, lock_timeout {lock_timeout:g}s), migrabot vs psql -f:")
    for label, a, b, target in (
            ("worst stall", ours.worst, theirs.worst, f"<= lock_timeout {lock_timeout:g}s"),
            ("total stall", ours.total, theirs.total, f"<= 1x lock_timeout = {lock_timeout:g}s"),
            ("number of stalls", ours.count, theirs.count, ""),
            ("migration wall time", ours.wall, theirs.wall, ""),
            ("done after the reader's end", ours.after_reader, theirs.after_reader, "<= 1s")):
        ratio = f"{a / b:.2f}x psql" if b else "psql 0"
        unit = "" if isinstance(a, int) else "s"
        fa = f"{a}" if isinstance(a, int) else f"{a:.3f}"
        fb = f"{b}" if isinstance(b, int) else f"{b:.3f}"
        print(f"  {label}: migrabot {fa}{unit}, psql {fb}{unit} ({ratio})" + (f"; target {target}" if target else ""))
    print(f"  migrabot's total stall is {ours.total / lock_timeout:.2f}x lock_timeout", flush=True)
    return ours, theirs


def _machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, CPU {cpu}, Python {platform.python_version()}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--lock-timeout", type=float, default=1.0)
    parser.add_argument("--counts", default="200,500,1000,5000", help="sizes of the generated corpora")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-runs", type=int, default=3, help="runs for corpora of 5,000 migrations or more")
    parser.add_argument("--no-stall", action="store_true", help="skip the lock stall part")
    args = parser.parse_args()
    conn = await asyncpg.connect(args.admin_url)
    version = await conn.fetchval("SELECT version()")
    await conn.close()
    print(_machine())
    print(version)
    print(_load(), flush=True)
    dbmate, why = await asyncio.to_thread(dbmate_binary)
    if dbmate is None:
        print(f"dbmate: skipped ({why})")
    if UMAMI.is_dir():
        await throughput(args.admin_url, "umami corpus (19 migrations)", UMAMI, args.runs, dbmate)
    else:
        print("umami corpus: skipped (../shared/corpus/umami is absent)")
    for count in [int(c) for c in args.counts.split(",") if c]:
        with tempfile.TemporaryDirectory() as tmp:
            await throughput(args.admin_url, f"{count} generated tiny migrations", _generated(Path(tmp), count),
                             args.runs if count < 5000 else args.big_runs, dbmate)
    if not args.no_stall:
        await lock_stall(args.admin_url, args.hold, args.lock_timeout)


if __name__ == "__main__":
    asyncio.run(main())
