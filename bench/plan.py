"""Plan posting: how long `/migrate ENV` takes to post its plan and checklist with many pending migrations.

    .venv/bin/python -m bench.plan [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--counts 1000]

The whole bot is driven over signed HTTP against the Slack stand-in (Slack's real pace: one
message per second per channel), with a real staging database. Measured from the slash command:
the run message posted (plan, lint verdicts, checklist), the checklist's automatic checks shown,
and the last SQL review reply in the thread (paced for Slack). Target: the plan and the checklist's
checks within 3 s. Beside it, the lint alone (``actions.lint.lint_folder``) against raw squawk on
the same files, the baseline measured in the same run (issue 18: ≤ 2×).

Corpora: generated tiny migrations (``--counts``), and a realistic one of 163 migrations built from
the umami corpus (its 19 files repeated with every quoted identifier suffixed), when ../shared is there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actions.lint import lint_folder, squawk_binary
from bench.common import drop_db, fresh_db
from bench.engine import UMAMI, _generated
from tests.botstack import ALICE, CHANNEL, bot_stack, make_config

TARGET = 3.0


def realistic(root: Path, count: int = 163) -> Path:
    """``count`` migrations from umami's 19, each round with its identifiers suffixed (``"user"`` → ``"user_r2"``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    sources = sorted(p for p in UMAMI.iterdir() if (p / "migration.sql").is_file())
    for i in range(count):
        src = sources[i % len(sources)]
        rnd = i // len(sources)
        sql = (src / "migration.sql").read_text()
        if rnd:
            sql = re.sub(r'"([A-Za-z_][A-Za-z0-9_]*)"', rf'"\1_r{rnd}"', sql)
        folder = root / f"{20240000000000 + i:014d}_{src.name.split('_', 1)[1]}"
        folder.mkdir()
        (folder / "migration.sql").write_text(sql)
    return root


def raw_squawk(folder: Path) -> float:
    files = sorted(str(p / "migration.sql") for p in folder.iterdir() if (p / "migration.sql").is_file())
    t0 = time.perf_counter()
    subprocess.run([squawk_binary(), "--reporter", "json", *files], capture_output=True, check=False)
    return time.perf_counter() - t0


def lint_only(folder: Path) -> float:
    t0 = time.perf_counter()
    lint_folder(folder)
    return time.perf_counter() - t0


async def until(predicate, timeout: float) -> float | None:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return time.perf_counter()
        await asyncio.sleep(0.01)
    return None


def last_name(corpus: Path) -> str:
    return sorted(p.name for p in corpus.iterdir() if p.is_dir())[-1]


async def plan_posting(admin: str, label: str, corpus: Path) -> None:
    last = last_name(corpus)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        shutil.copytree(corpus, Path(tmp) / "migrations")
        staging = await fresh_db(admin, "bench_plan_staging")
        prod = await fresh_db(admin, "bench_plan_prod")
        try:
            config = make_config(Path(tmp), staging, prod)
            async with bot_stack(config, time_factor=1.0, check_mentions=False) as s:
                t0 = time.perf_counter()
                await s.driver.slash(ALICE, "/migrate", "staging", CHANNEL)
                acked = time.perf_counter()

                def run_message():  # type: ignore[no-untyped-def]
                    found = s.slack.messages(CHANNEL)
                    return found[0] if found else None

                posted = await until(lambda: run_message() is not None, 120)
                checked = await until(lambda: "backup pre-flight" in str(run_message().blocks), 120)
                sql_done = await until(lambda: any(last in r.text or last in str(r.blocks)
                                                   for r in run_message().replies), 300)
                await s.settle()
        finally:
            await drop_db(admin, "bench_plan_staging")
            await drop_db(admin, "bench_plan_prod")

    def since(t: float | None) -> str:
        return f"{t - t0:.2f}s" if t is not None else "not within the wait"

    squawk = raw_squawk(corpus)
    lint = lint_only(corpus)
    ratio = f" ({(checked - t0) / TARGET:.2f}x the {TARGET:g} s target)" if checked is not None else ""
    print(f"{label}: ack {acked - t0:.3f}s; run message (plan + checklist) {since(posted)}; checklist checks "
          f"shown {since(checked)}{ratio}; last SQL reply {since(sql_done)}")
    print(f"{label}: lint {lint:.2f}s vs raw squawk {squawk:.2f}s on the same files: {lint / squawk:.2f}x "
          "(issue 18 target <= 2x)", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--counts", default="1000", help="sizes of the generated corpora, comma-separated")
    parser.add_argument("--lint-only", default="5000", help="sizes linted only (no bot), comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-corpus-") as tmp:
        if UMAMI.is_dir():
            await plan_posting(args.admin_url, "163 realistic (umami x9)", realistic(Path(tmp) / "real"))
        else:
            print("163 realistic: skipped (../shared/corpus/umami is absent)")
        for count in [int(c) for c in args.counts.split(",") if c]:
            await plan_posting(args.admin_url, f"{count} generated", _generated(Path(tmp) / f"g{count}", count))
        for count in [int(c) for c in args.lint_only.split(",") if c]:
            folder = _generated(Path(tmp) / f"l{count}", count)
            squawk, lint = raw_squawk(folder), lint_only(folder)
            print(f"lint of {count} generated: {lint:.2f}s vs raw squawk {squawk:.2f}s: {lint / squawk:.2f}x "
                  "(issue 18 target <= 2x)", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
