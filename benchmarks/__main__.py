"""Run the benchmarks: ``python -m benchmarks [--quick] [--only GROUP ...] [--json F] [--docs]``.

Everything is measured side by side in this one run and printed as ratios
against targets; absolute times on shared machines are noise. The command
exits with status 1 when a figure misses its target, so a regression fails
the run that measured it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import ModuleType

import anyio
import attrs

from . import (
    bench_cache,
    bench_e2e,
    bench_executor,
    bench_http,
    bench_peers,
    bench_redis,
    bench_scaling,
    bench_stack,
    bench_workers,
)
from ._common import Row
from ._report import write_docs, write_plots

GROUPS: dict[str, ModuleType] = {
    "executor": bench_executor,
    "scaling": bench_scaling,
    "cache": bench_cache,
    "redis": bench_redis,
    "http": bench_http,
    "peers": bench_peers,
    "e2e": bench_e2e,
    "stack": bench_stack,
    "workers": bench_workers,
}


async def measure(groups: list[str], quick: bool) -> list[Row]:
    print(f"batchpage benchmarks ({'quick' if quick else 'full'}), Python {sys.version.split()[0]}")
    rows: list[Row] = []
    for group in groups:
        print(f"\n[{group}]", flush=True)
        for row in await GROUPS[group].run(quick):
            row = attrs.evolve(row, group=group)
            rows.append(row)
            print(row.line(), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(GROUPS), metavar="GROUP", help="run these groups"
    )
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="write the figures into the docs: docs/performance.md (a run of every group) and "
        "docs/deployment.md (the workers group), and plots under docs/images",
    )
    args = parser.parse_args()
    groups = args.only or list(GROUPS)
    rows = anyio.run(measure, groups, args.quick)
    if args.json:
        args.json.write_text(json.dumps([row.as_dict() for row in rows], indent=2) + "\n")
    if args.docs:
        written = write_docs(rows, complete=set(groups) == set(GROUPS))
        if set(groups) == set(GROUPS):  # the plots belong with performance.md's table
            written += write_plots(rows)
        for path in written:
            print(f"wrote {path}")
        if not written:
            print("--docs: nothing written (performance.md takes a run of every group)")
    missed = [row for row in rows if row.verdict == "MISSED"]
    print(f"\n{len(rows)} figures, {len(missed)} targets missed")
    for row in missed:
        print(f"  MISSED: {row.name}: {row.value:.3f}{row.unit} against {row.target.text}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
