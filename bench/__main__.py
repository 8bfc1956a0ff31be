"""`just bench`: run every benchmark and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import sys
from pathlib import Path

from bench.common import Row, machine, table

BENCHES = ("convert", "serve", "cache", "route", "e2e", "ondemand", "retrieval", "kvdisk", "cluster", "vision")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument(
        "only", nargs="*", metavar="BENCH", help=f"benchmarks to run: {', '.join(BENCHES)} (default: all)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="file to write the table to (default: bench/RESULTS.md after a full run; a partial or "
        "quick run only prints)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs, where a benchmark has a quick mode")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    rows: list[Row] = []
    for name in args.only or BENCHES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"bench: {name}: not written yet, skipped", file=sys.stderr)
            continue
        print(f"== {name}", flush=True)
        quick = args.quick and "quick" in inspect.signature(module.run).parameters
        rows.extend(module.run(quick=True) if quick else module.run())
    text = (
        f"# Benchmark results\n\nMeasured {datetime.date.today()} on {machine()}.\n"
        "Each ratio is against a baseline measured in the same run.\n\n" + table(rows) + "\n"
    )
    out = args.out or (None if args.only or args.quick else Path(__file__).with_name("RESULTS.md"))
    if out is not None:
        out.write_text(text)
    print(text)
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
