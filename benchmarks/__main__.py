"""Run every benchmark (or those named) and print the table; JSON in benchmarks/results/."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .harness import table, write_json

ALL = ["startup", "headless", "wizard", "handshake", "delivery", "throughput", "capacity", "sync"]


# Script rules beside the Basic mapping (benchmarks/rules.py).
ALL += ["rules"]
# ServiceNow on the public side, against the emulator (benchmarks/servicenow.py).
ALL += ["servicenow"]
# The public side's streams in PostgreSQL beside state.sqlite3 (benchmarks/postgres.py).
ALL += ["postgres"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {ALL})")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "latest.json"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {ALL}")
    figures = []
    for name in args.names or ALL:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures += importlib.import_module(f"benchmarks.{name}").measure()
    print(table(figures))
    write_json(figures, args.json)
    print(f"\nwritten to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
