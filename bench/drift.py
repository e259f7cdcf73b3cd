"""Drift benchmark: `migrabot drift` against the floor of building the expected schema.

    python -m bench.drift [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--tables 500] [--runs 3]

For the umami corpus and a generated schema (--tables tables of --columns columns, with a primary
key, two indexes, a check constraint and a foreign key each, --per-migration tables per migration):

* floor: migrabot's deploy of the folder into an empty database (what the shadow database must at
  least do to know the expected schema);
* drift: the whole check of the deployed database (files vs ledger, shadow database created, every
  migration applied one at a time with what it creates noted, both catalogs read and compared,
  shadow dropped).

Each run deploys and then checks, so both see the same machine; medians of --runs; target:
drift <= 1.5 x floor + 1 s. The check must also find the database in sync.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from actions.deploy import deploy
from actions.drift import check_drift
from bench.common import drop_db, fresh_db

UMAMI = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "umami" / "migrations"
DEPLOY_LIMIT = 120.0
TYPES = ["text", "integer", "bigint", "boolean", "timestamptz(6)", "varchar(255)", "numeric(12,2)", "uuid", "jsonb"]


def generate(root: Path, tables: int, columns: int, per_migration: int) -> Path:
    """A migrations folder creating ``tables`` tables of ``columns`` columns, ``per_migration`` per file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for m in range(0, tables, per_migration):
        statements = []
        for t in range(m, min(m + per_migration, tables)):
            cols = [f'    "c{c}" {TYPES[c % len(TYPES)]}{" NOT NULL" if c % 3 == 0 else ""}'
                    for c in range(1, columns)]
            statements.append(
                f'CREATE TABLE "t{t}" (\n    "id" SERIAL NOT NULL,\n' + ",\n".join(cols) + ",\n"
                f'    CONSTRAINT "t{t}_pkey" PRIMARY KEY ("id"),\n'
                f'    CONSTRAINT "t{t}_c2_check" CHECK ("c2" >= 0)\n);\n'
                f'CREATE INDEX "t{t}_c1_idx" ON "t{t}"("c1");\n'
                f'CREATE UNIQUE INDEX "t{t}_c5_c3_key" ON "t{t}"("c5", "c3");\n')
            if t % per_migration:  # a foreign key to the first table of the same migration
                statements.append(f'ALTER TABLE "t{t}" ADD CONSTRAINT "t{t}_c2_fkey" FOREIGN KEY ("c2") '
                                  f'REFERENCES "t{m}"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n')
        folder = root / f"{m // per_migration:05d}_gen"
        folder.mkdir(exist_ok=True)
        (folder / "migration.sql").write_text("".join(statements))
    return root




async def measure(admin: str, label: str, folder: Path, runs: int) -> tuple[float, float]:
    """Interleaved: each run deploys into a fresh database (the floor), then checks it (the drift)."""
    floors, checks = [], []
    for run in range(runs):
        for attempt in range(3):
            url = await fresh_db(admin, f"bench_drift_{run}")
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(deploy(url, folder), DEPLOY_LIMIT)
                break
            except TimeoutError:  # seen on a busy machine: the deploy's blocker watch never let go
                print(f"  (deploy stuck for {DEPLOY_LIMIT:.0f} s, attempt {attempt + 1}; measuring again)", flush=True)
        else:
            raise SystemExit("deploy got stuck three times; see actions/blockers.py BlockerWatch.watching")
        floors.append(time.perf_counter() - t0)
        assert result.ok, result.failed
        t0 = time.perf_counter()
        report = await check_drift(url, folder, env_name="bench", prisma=False)
        checks.append(time.perf_counter() - t0)
        assert report.in_sync, report.describe()
        await drop_db(admin, f"bench_drift_{run}")
    floor, check = statistics.median(floors), statistics.median(checks)
    target = 1.5 * floor + 1.0
    print(f"{label}: drift {check:.3f}s, floor (deploy to an empty database) {floor:.3f}s, "
          f"ratio {check / floor:.2f}x; target <= 1.5 x floor + 1 s = {target:.3f}s: "
          f"{'met' if check <= target else 'MISSED'} ({report.expected_objects} objects compared)", flush=True)
    return check, floor


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--per-migration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.admin_url)
    print(await conn.fetchval("SELECT version()"), f"nproc {os.cpu_count()}")
    await conn.close()
    if UMAMI.is_dir():
        await measure(args.admin_url, "umami corpus (19 migrations)", UMAMI, args.runs)
    else:
        print(f"umami corpus skipped: {UMAMI} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        folder = generate(Path(tmp) / "m", args.tables, args.columns, args.per_migration)
        label = (f"{args.tables} tables x {args.columns} columns "
                 f"({-(-args.tables // args.per_migration)} migrations)")
        await measure(args.admin_url, label, folder, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
