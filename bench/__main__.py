"""Run every benchmark, one after the other: ``python -m bench [--quick]``.

Each prints its figures as ratios against a baseline measured in the same run; the
figures recorded for this repository are in ``bench/RESULTS.md``. Each benchmark also
runs alone: ``python -m bench.engine``, ``python -m bench.backup``, ``python -m bench.ack``,
``python -m bench.startup``, ``python -m bench.plan``, ``python -m bench.lint``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "engine": ([], ["--counts", "200", "--hold", "5", "--runs", "1"]),
    "startup": ([], ["--runs", "5"]),
    "plan": ([], ["--counts", "1000", "--lint-only", ""]),
    "backup": ([], ["--scale", "10", "--runs", "1"]),
    "ack": ([], ["--rounds", "1"]),
    "drift": ([], ["--tables", "100", "--runs", "1"]),
    "rehearsal": ([], ["--size-mb", "50"]),
    "replicas": ([], ["--rounds", "1", "--lease", "3"]),
    "lint": ([], ["--rounds", "5", "--counts", "1000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer rounds (a few minutes)")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"which ones: {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in args.names or list(BENCHMARKS):
        full, quick = BENCHMARKS[name]
        print(f"\n=== bench.{name} ===", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)])
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
