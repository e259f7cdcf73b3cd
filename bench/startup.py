"""CLI start-up: `migrabot --version` and `migrabot status ENV` against a bare `python -c pass`.

    .venv/bin/python -m bench.startup [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--runs 15]

Every command runs from the same virtual environment as the baseline, with compiled bytecode
cached (``PYTHONPYCACHEPREFIX`` under build/, as an installed package has its .pyc files).
Reported: median wall time of each, the overhead over the baseline (target: ≤ 120 ms each), and
the import time ``python -X importtime`` counts for what the command loads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import drop_db, fresh_db
from bench.engine import BUILD, UMAMI, _generated

TARGET_MS = 120.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(BUILD / "pycache")
    return env


def wall(cmd: list[str], runs: int) -> float:
    """Median seconds of ``cmd`` (after one warm-up run that also writes the bytecode cache)."""
    subprocess.run(cmd, capture_output=True, env=_env(), check=False)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=_env(), check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def imports_ms(code: str) -> float:
    """What ``python -X importtime -c code`` counts, in ms (top-level imports' cumulative times added)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env=_env(), check=False)
    total = 0
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):
            total += int(m.group(1))
    return total / 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    migrabot = str(Path(sys.executable).parent / "migrabot")
    url = await fresh_db(args.admin_url, "bench_startup")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            folder = UMAMI if UMAMI.is_dir() else _generated(Path(tmp) / "m", 19)
            config = Path(tmp) / "migrabot.toml"
            config.write_text(f'[environments.dev]\ndatabase_url = "{url}"\nmigrations_dir = "{folder}"\n')
            base = wall([sys.executable, "-c", "pass"], args.runs)
            base_imports = imports_ms("pass")
            rows = [
                ("migrabot --version", [migrabot, "--version"],
                 "import bot.cli; bot.cli.build_parser(bot.cli.parser_modules(['--version']))"),
                ("migrabot status dev", [migrabot, "status", "dev", "--config", str(config)],
                 "import bot.cli; bot.cli.build_parser(bot.cli.parser_modules(['status'])); import bot.config; "
                 "import actions.status"),
            ]
            print(f"baseline `python -c pass`: {base * 1000:.0f} ms (imports {base_imports:.0f} ms)")
            for label, cmd, code in rows:
                t = await asyncio.to_thread(wall, cmd, args.runs)
                imports = imports_ms(code) - base_imports
                over = (t - base) * 1000
                print(f"{label}: {t * 1000:.0f} ms, {t / base:.2f}x the baseline; overhead {over:.0f} ms "
                      f"({over / TARGET_MS:.2f}x the {TARGET_MS:.0f} ms target); its imports {imports:.0f} ms",
                      flush=True)
    finally:
        await drop_db(args.admin_url, "bench_startup")


if __name__ == "__main__":
    asyncio.run(main())
