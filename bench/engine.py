"""Engine benchmark: deploy throughput against `psql -f`, and application stall behind a blocked migration.

    .venv/bin/python -m bench.engine [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--hold 10]

1. Throughput: the umami corpus and 500 generated small migrations, applied on an empty database
   by migrabot's deploy and by one `psql -f` of the concatenated files (ON_ERROR_STOP); median of 3.
2. Lock stall: a transaction holds ACCESS SHARE on a busy table for --hold seconds while a
   migration needs ACCESS EXCLUSIVE; a client queries the table every 50 ms; longest wait reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from actions.db import quote_ident, with_database
from actions.deploy import deploy
from actions.migrations_dir import read_migrations
from bot.config import RetryPolicy

UMAMI = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "umami" / "migrations"


async def _fresh_db(admin: str, name: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()
    return with_database(admin, name)


async def _drop_db(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


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


def _concatenate(folder: Path) -> Path:
    """One file with every migration, as a team running `psql -f` by hand would build it."""
    concat = Path(tempfile.mkstemp(suffix=".sql")[1])
    concat.write_text("\n".join(m.sql + "\n;" for m in read_migrations(folder)))
    return concat


async def throughput(admin: str, label: str, folder: Path, runs: int = 3) -> tuple[float, float]:
    concat = _concatenate(folder)
    ours, theirs = [], []
    try:
        for run in range(runs):
            url = await _fresh_db(admin, f"bench_engine_{run}_a")
            t0 = time.perf_counter()
            result = await deploy(url, folder)
            ours.append(time.perf_counter() - t0)
            assert result.ok, result.failed
            url2 = await _fresh_db(admin, f"bench_engine_{run}_b")
            t0 = time.perf_counter()
            await _psql(url2, "-f", str(concat))
            theirs.append(time.perf_counter() - t0)
            await _drop_db(admin, f"bench_engine_{run}_a")
            await _drop_db(admin, f"bench_engine_{run}_b")
    finally:
        os.unlink(concat)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{label}: migrabot {a:.3f}s, psql -f {b:.3f}s, ratio {a / b:.2f}x (target <= 1.5x)")
    return a, b


async def _stall(admin: str, hold: float, apply) -> float:  # type: ignore[no-untyped-def]
    url = await _fresh_db(admin, "bench_engine_stall")
    setup = await asyncpg.connect(url)
    await setup.execute("CREATE TABLE busy (id int PRIMARY KEY); INSERT INTO busy SELECT generate_series(1, 1000)")
    await setup.close()
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")
    stop = asyncio.Event()
    stalls: list[float] = []

    async def probe() -> None:
        conn = await asyncpg.connect(url)
        while not stop.is_set():
            t0 = time.perf_counter()
            await conn.fetchval("SELECT count(*) FROM busy")
            stalls.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        await conn.close()

    async def release() -> None:
        await asyncio.sleep(hold)
        await holder.execute("COMMIT")

    probing = asyncio.create_task(probe())
    releasing = asyncio.create_task(release())
    await asyncio.sleep(0.3)
    await apply(url)
    await releasing
    await asyncio.sleep(0.3)
    stop.set()
    await probing
    await holder.close()
    await _drop_db(admin, "bench_engine_stall")
    return max(stalls)


async def lock_stall(admin: str, hold: float, lock_timeout: float) -> tuple[float, float]:
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
    print(f"lock stall (hold {hold:g}s, lock_timeout {lock_timeout:g}s): longest app wait with migrabot "
          f"{ours:.3f}s, with psql -f {theirs:.3f}s, {theirs / ours:.0f}x shorter "
          f"(target <= {lock_timeout + 0.1:.1f}s and >= 10x)")
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
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.admin_url)
    version = await conn.fetchval("SELECT version()")
    await conn.close()
    print(_machine())
    print(version)
    if UMAMI.is_dir():
        await throughput(args.admin_url, "umami corpus (19 migrations)", UMAMI)
    with tempfile.TemporaryDirectory() as tmp:
        await throughput(args.admin_url, f"{args.count} generated migrations", _generated(Path(tmp), args.count))
    await lock_stall(args.admin_url, args.hold, args.lock_timeout)


if __name__ == "__main__":
    asyncio.run(main())
