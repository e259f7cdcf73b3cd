"""Lint benchmark: `migrabot lint DIR` wall time against raw `squawk` on the same files, in the same run.

    python -m bench.lint [--rounds 15] [--counts 5000] [--output bench/results/lint.md]

Each command is a fresh process, as a CI job runs it (Python's start-up, the imports and squawk's
own run all count), with compiled modules as an installed migrabot has them: ``PYTHONPYCACHEPREFIX``
in the temporary folder, written by the warm-up, even where ``PYTHONDONTWRITEBYTECODE`` is set (as
``bench.startup`` does; without it every run compiles migrabot's modules again, 10 ms or more that no
installed copy pays). Per round the commands take turns (the order rotates); the figures are the
median of each command over the rounds, and the ratio is the median of the per-round ratios to raw
squawk. Baselines:

* ``squawk --reporter json FILES``: raw squawk, every rule (the issue's baseline, target ≤ 2×);
* ``squawk --reporter json --exclude RULES FILES``: squawk skipping the rules migrabot excludes by
  default (what migrabot asks squawk for; stricter);
* ``python -c pass``: the interpreter's own start-up, for scale;
* two floors, what any Python front end to squawk costs before it does any work of its own: a Python
  process that starts squawk on the files and waits for it (no import at all: ``os.posix_spawn``), and
  one that also reads squawk's findings (``subprocess.run`` and ``json.loads``, as migrabot must).

Corpora: the umami migrations (``../shared/corpus/umami/migrations``, 19 real files) when present,
163 realistic migrations built from them (each round of the 19 with every quoted identifier
suffixed), and generated ones (``--counts``: a table and a non-concurrent index each). `migrabot
lint` runs in a folder without a configuration, and again beside a ``migrabot.toml`` that has a
``[lint]`` section (the configuration is then read while squawk runs). Everything it creates lives
in one temporary folder, removed on every path.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actions.lint import DEFAULT_EXCLUDE, squawk_binary

ROOT = Path(__file__).resolve().parent.parent
UMAMI = ROOT.parent / "shared" / "corpus" / "umami" / "migrations"
RESULTS = Path(__file__).resolve().parent / "results" / "lint.md"
TARGET = 2.0

#: Python front ends to squawk that do nothing else (see the module docstring), run as ``python -c``.
SPAWN_ONLY = """import os, sys
fd = os.open(os.devnull, os.O_WRONLY)
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)])
os.waitpid(pid, 0)
"""
SPAWN_AND_READ = """import json, subprocess, sys
findings = json.loads(subprocess.run(sys.argv[1:], capture_output=True).stdout or b"[]")
"""


def realistic(root: Path, count: int = 163) -> Path:
    """``count`` migrations from umami's 19, each round with its identifiers suffixed (``"user"`` → ``"user_r2"``)."""
    root.mkdir(parents=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    sources = sorted(p for p in UMAMI.iterdir() if (p / "migration.sql").is_file())
    for i in range(count):
        src, rnd = sources[i % len(sources)], i // len(sources)
        sql = (src / "migration.sql").read_text()
        if rnd:
            sql = re.sub(r'"([A-Za-z_][A-Za-z0-9_]*)"', rf'"\1_r{rnd}"', sql)
        folder = root / f"{20240000000000 + i:014d}_{src.name.split('_', 1)[1]}"
        folder.mkdir()
        (folder / "migration.sql").write_text(sql)
    return root


def generated(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for i in range(count):
        folder = root / f"{i:05d}_gen"
        folder.mkdir()
        (folder / "migration.sql").write_text(
            f"CREATE TABLE t{i} (id serial PRIMARY KEY, v text NOT NULL DEFAULT '');\n"
            f"CREATE INDEX t{i}_v ON t{i} (v);\n")
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p / "migration.sql") for p in folder.iterdir() if (p / "migration.sql").is_file())


def measure(folder: Path, rounds: int, plain: Path, configured: Path) -> dict[str, list[float]]:
    """Seconds per command per round (commands alternate within a round, the order rotating)."""
    squawk, migrabot = squawk_binary(), str(Path(sys.executable).parent / "migrabot")
    files = _files(folder)
    commands: dict[str, tuple[list[str], Path]] = {
        "raw squawk": ([squawk, "--reporter", "json", *files], plain),
        "squawk --exclude (migrabot's rules)": (
            [squawk, "--reporter", "json", "--exclude", ",".join(DEFAULT_EXCLUDE), *files], plain),
        "migrabot lint DIR": ([migrabot, "lint", str(folder)], plain),
        "migrabot lint DIR --json": ([migrabot, "lint", str(folder), "--json"], plain),
        "migrabot lint DIR, beside a migrabot.toml": ([migrabot, "lint", str(folder)], configured),
        "python -c pass": ([sys.executable, "-c", "pass"], plain),
        "floor: Python starts squawk, waits": ([sys.executable, "-c", SPAWN_ONLY, squawk, "--reporter", "json",
                                               *files], plain),
        "floor: Python starts squawk, reads its JSON": ([sys.executable, "-c", SPAWN_AND_READ, squawk, "--reporter",
                                                         "json", *files], plain),
    }
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRABOT_CONFIG", "PYTHONDONTWRITEBYTECODE")}
    # compiled modules, as an installed migrabot has them (pip compiles them at install): the warm-up
    # writes them under the bench's temporary folder, whatever PYTHONDONTWRITEBYTECODE says here
    env["PYTHONPYCACHEPREFIX"] = str(plain.parent / "pycache")
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for _ in range(2):  # warm-up: the page cache, squawk's and Python's files
        for cmd, cwd in commands.values():
            subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd, cwd = commands[name]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  check=False)
            times[name].append(time.perf_counter() - t0)
            if done.returncode not in (0, 1):  # 1: risky migrations found (migrabot), findings (squawk)
                raise RuntimeError(f"{name} failed (exit {done.returncode}): {done.stderr.decode()[-300:]}")
    return times


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def report(label: str, count: int, times: dict[str, list[float]]) -> list[str]:
    base = times["raw squawk"]
    lines = [f"### {label} ({count} files)", "",
             "| command | median (ms) | min (ms) | ratio to raw squawk (median of per-round ratios) |",
             "|---|---:|---:|---:|"]
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        mark = ""
        if name.startswith("migrabot lint"):
            mark = " (met)" if ratio <= TARGET else " (NOT met)"
        lines.append(f"| `{name}` | {statistics.median(ts) * 1000:.1f} | {min(ts) * 1000:.1f} | {ratio:.2f}×{mark} |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lint", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per corpus (each command once per round)")
    parser.add_argument("--counts", default="5000", help="sizes of the generated corpora, comma-separated")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # the temporary folder is removed on SIGTERM too
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = _load()
    lines = [f"- Run: {started}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
             f"{subprocess.run([squawk_binary(), '--version'], capture_output=True, text=True).stdout.strip()}; "
             f"{args.rounds} rounds per corpus", ""]
    with tempfile.TemporaryDirectory(prefix="migrabot-bench-lint-") as tmp:
        work = Path(tmp)
        plain, configured = work / "plain", work / "configured"
        plain.mkdir()
        configured.mkdir()
        # a valid configuration whose [lint] section keeps the default exclusions (squawk is not run twice)
        (configured / "migrabot.toml").write_text(
            '[environments.dev]\ndatabase_url = "postgresql://nobody@127.0.0.1:1/none"\n'
            f'migrations_dir = "{work}"\n\n[lint]\nexclude = [{", ".join(repr(r) for r in DEFAULT_EXCLUDE)}]\n'
            .replace("'", '"'))
        corpora: list[tuple[str, Path]] = []
        if UMAMI.is_dir():
            corpora.append(("umami, as it is", UMAMI))
            corpora.append(("realistic: umami ×9, identifiers suffixed", realistic(work / "real")))
        else:
            print(f"umami corpus absent ({UMAMI}): only generated corpora", file=sys.stderr)
        for count in [int(c) for c in args.counts.split(",") if c]:
            corpora.append(("generated: a table and an index each", generated(work / f"g{count}", count)))
        for label, folder in corpora:
            count = len(_files(folder))
            print(f"{label}: {count} files …", flush=True)
            lines += report(label, count, measure(folder, args.rounds, plain, configured))
            print("\n".join(lines[-10:]), flush=True)
    lines.insert(1, f"- Load average (1/5/15 min) at start {load_start}, at end {_load()} (other work shares "
                    "this machine)")
    text = "\n".join(lines)
    print("\n" + text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
